"""Audit records: what one finished exchange becomes in the audit log, as field values and as a spool line."""

import hashlib
import ipaddress
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings

from proxy.exchange import Exchange

FULL = "full"
METADATA = "metadata"
REDACTED = "[redacted]"

# Column widths of AuditRecord's CharFields: PostgreSQL refuses longer values, and one refused
# row must not hold up a batch, so the builder clips client-controlled strings to fit.
REQUEST_ID_MAX = 128
KEY_PREFIX_MAX = 16
NAME_MAX = 100
USER_AGENT_MAX = 300
METHOD_MAX = 10
PATH_MAX = 500
ENDPOINT_MAX = 32
MODEL_MAX = 200
ERROR_FIELD_MAX = 64
# Keeps a metadata-only row near 1 KB even when an upstream sends a novel as its error.
ERROR_MESSAGE_MAX = 500

# PositiveIntegerField's range: token counts outside it are the upstream's nonsense, not ours to store.
TOKENS_MAX = 2**31 - 1
NUL_ESCAPED = b"\\u0000"


def audit_record_from(exchange: Exchange, *, capture: str | None = None) -> dict[str, Any]:
    """AuditRecord field values for a finished exchange (attnames: api_key_id, policy_id)."""
    key = exchange.key
    policy = key.policy if key else None
    # Without a key nobody chose a capture level, and nothing vouches for the body: metadata.
    capture = capture or (policy.audit_capture if policy else METADATA)
    error_type, error_code, error_message = _error_fields(exchange)
    return {
        "record_id": str(uuid.UUID(bytes=os.urandom(16), version=4)),
        "request_id": exchange.request_id[:REQUEST_ID_MAX],
        "created_at": datetime.fromtimestamp(exchange.received_at, UTC),
        "api_key_id": key.key_id if key else None,
        "key_prefix": key.key_prefix[:KEY_PREFIX_MAX] if key else "",
        "key_name": key.key_name[:NAME_MAX] if key else "",
        "policy_id": policy.id if policy else None,
        "policy_name": policy.name[:NAME_MAX] if policy else "",
        "policy_version": policy.version if policy and policy.id is not None else None,
        "client_ip": _ip_or_none(exchange.client_ip),
        "user_agent": exchange.user_agent[:USER_AGENT_MAX],
        "method": exchange.method[:METHOD_MAX],
        "path": exchange.path[:PATH_MAX],
        "endpoint": exchange.endpoint[:ENDPOINT_MAX],
        "model_requested": _clip(exchange.model_requested, MODEL_MAX),
        "model_upstream": _clip(_upstream_model(exchange), MODEL_MAX),
        "stream": exchange.stream,
        "modifications": list(exchange.modifications),
        "status_code": exchange.status,
        "upstream_status": exchange.upstream_status,
        "outcome": str(exchange.outcome or ""),
        "error_type": _clip(error_type, ERROR_FIELD_MAX),
        "error_code": _clip(error_code, ERROR_FIELD_MAX),
        "error_message": _clip(error_message, ERROR_MESSAGE_MAX),
        **_tokens(exchange.response_body),
        **exchange.timings(),
        **_bodies(exchange, capture),
    }


def audit_line(fields: dict[str, Any], *, secrets: tuple[bytes, ...] = ()) -> bytes:
    """The record as one JSON line for the spool: nothing PostgreSQL would refuse, no known secret."""
    line = orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
    if NUL_ESCAPED in line:
        # jsonb and text columns refuse NUL; rare enough to pay for a second pass.
        line = orjson.dumps(_without_nul(fields), option=orjson.OPT_APPEND_NEWLINE)
    for secret in secrets:
        if secret in line:
            line = line.replace(secret, REDACTED.encode())
    return line


def secret_needles(*values: str) -> tuple[bytes, ...]:
    """Secrets as they would appear inside a JSON line (escaped), ignoring ones too short to matter."""
    return tuple(orjson.dumps(value)[1:-1] for value in values if value and len(value) >= 8)


# --- the parts -------------------------------------------------------------------------


def _bodies(exchange: Exchange, capture: str) -> dict[str, Any]:
    if capture != FULL:
        return {
            "capture": METADATA,
            "request_body": None,
            "forwarded_body": None,
            "response_body": None,
            "bodies_truncated": False,
        }
    limit = settings.AUDIT_MAX_BODY_BYTES
    request, request_cut = _body(exchange.request_body, exchange.request_content_type, limit)
    if exchange.forwarded_body is exchange.request_body:
        forwarded, forwarded_cut = request, request_cut
    else:
        forwarded, forwarded_cut = _body(exchange.forwarded_body, exchange.request_content_type, limit)
    response, response_cut = _body(exchange.response_body, exchange.response_content_type, limit)
    return {
        "capture": FULL,
        "request_body": request,
        "forwarded_body": forwarded,
        "response_body": response,
        "bodies_truncated": request_cut or forwarded_cut or response_cut,
    }


def _body(body: dict | list | bytes | None, content_type: str, limit: int) -> tuple[Any, bool]:
    """A body as stored, and whether it was truncated. Bytes are described, never kept."""
    if body is None:
        return None, False
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        return {"content_type": content_type, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, False
    serialized = orjson.dumps(body)
    if len(serialized) <= limit:
        return body, False
    # The head of the JSON text keeps the start of the conversation searchable.
    head = serialized[:limit].decode("utf-8", errors="ignore")
    return {"truncated": True, "size": len(serialized), "head": head}, True


def _tokens(body: Any) -> dict[str, int | None]:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}
    # Chat and embeddings say prompt/completion; the audio and responses APIs say input/output.
    return {
        "prompt_tokens": _count(usage.get("prompt_tokens", usage.get("input_tokens"))),
        "completion_tokens": _count(usage.get("completion_tokens", usage.get("output_tokens"))),
        "total_tokens": _count(usage.get("total_tokens")),
    }


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= TOKENS_MAX:
        return value
    return None


def _error_fields(exchange: Exchange) -> tuple[str, str, str]:
    """Our own error if we raised one, else the error the upstream put in its body (or its stream)."""
    if exchange.error is not None:
        error = exchange.error
        return error.type or "", error.code or "", error.message or ""
    body = exchange.response_body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return _text(error.get("type")), _text(error.get("code")), _text(error.get("message"))
    if isinstance(error, str):
        return "", "", error
    return "", "", ""


def _upstream_model(exchange: Exchange) -> str | None:
    """The model the upstream says answered (a dated snapshot, say), else the one we asked for."""
    body = exchange.response_body
    reported = body.get("model") if isinstance(body, dict) else None
    return reported if isinstance(reported, str) and reported else exchange.model_upstream


def _ip_or_none(value: str | None) -> str | None:
    # A unix socket or a proxy's odd REMOTE_ADDR would fail the inet column, and the batch with it.
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _clip(value: str | None, length: int) -> str:
    return value[:length] if isinstance(value, str) else ""


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value
