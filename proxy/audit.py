"""Audit records: built from a finished exchange, written as a spool line, inserted as rows."""

import contextlib
import hashlib
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, DataError, IntegrityError, connection
from psycopg.types.json import Jsonb

from proxy.exchange import Exchange
from proxy.models import AuditRecord

logger = logging.getLogger(__name__)

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
STORED_ID_MAX = 200
ERROR_FIELD_MAX = 64
# Keeps a metadata-only row near 1 KB even when an upstream sends a novel as its error.
ERROR_MESSAGE_MAX = 500

# PositiveIntegerField's range: token counts outside it are the upstream's nonsense, not ours to store.
TOKENS_MAX = 2**31 - 1
NUL_ESCAPED = b"\\u0000"
REJECTED_FILE = "rejected.jsonl"
# What one row refused by the database looks like; anything else (connection lost) is retried.
ROW_ERRORS = (DataError, IntegrityError, ValidationError, ValueError, TypeError)
FIELD_NAMES = frozenset(field.attname for field in AuditRecord._meta.concrete_fields)
_COLUMNS = ", ".join(f'"{field.column}"' for field in AuditRecord._meta.concrete_fields if not field.primary_key)
_TABLE = f'"{AuditRecord._meta.db_table}"'
# Spool lines are JSON objects keyed by column: PostgreSQL maps them onto rows itself (keys it does not
# know are ignored; a missing NOT NULL column fails the batch, which the ORM's path then fills in).
# Names from our own model, never from input: the payload travels as a bound parameter.
INSERT_FROM_JSON = (
    f"INSERT INTO {_TABLE} ({_COLUMNS}) "  # noqa: S608
    f"SELECT {_COLUMNS} FROM jsonb_populate_recordset(NULL::{_TABLE}, %s)"
)


def audit_record_from(exchange: Exchange, *, capture: str | None = None) -> dict[str, Any]:
    """AuditRecord field values for a finished exchange (attnames: api_key_id, policy_id)."""
    key = exchange.key
    policy = key.policy if key else None
    # Without a key nobody chose a capture level, and nothing vouches for the body: metadata.
    capture = capture or (policy.audit_capture if policy else METADATA)
    error_type, error_code, error_message = _error_fields(exchange)
    return {
        "record_id": exchange.record_id,
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
        "stored_id": _clip(exchange.stored_id, STORED_ID_MAX),
        "modifications": list(exchange.modifications),
        "status_code": exchange.status,
        "upstream_status": exchange.upstream_status,
        "outcome": str(exchange.outcome or ""),
        "error_type": _clip(error_type, ERROR_FIELD_MAX),
        "error_code": _clip(error_code, ERROR_FIELD_MAX),
        "error_message": _clip(error_message, ERROR_MESSAGE_MAX),
        **_tokens(exchange.response_body),
        **_cost(exchange),
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


# --- into the table: runs in the writer's thread -------------------------------------------


def audit_model_from(fields: dict[str, Any]) -> AuditRecord:
    # Fields a newer or older version wrote are ignored: a spool survives upgrades.
    return AuditRecord(**{name: value for name, value in fields.items() if name in FIELD_NAMES})


def insert_lines(lines: list[bytes], directory: Path) -> int:
    """Inserts spool lines as one batch; returns how many the database refused (kept in `directory`)."""
    try:
        if _inserted_as_json(lines):
            return 0
        rows, refused = _decoded(lines)
        refused += _bulk_created(rows)
        _keep_refused(refused, directory / REJECTED_FILE)
        return len(refused)
    finally:
        # Back to the pool now: this thread may sleep for a long time before the next batch.
        with contextlib.suppress(DatabaseError):
            connection.close()


def _inserted_as_json(lines: list[bytes]) -> bool:
    """The whole batch in one statement that PostgreSQL unpacks from the spool lines themselves.

    The writer thread then does no per-row work in Python: it shares its process's GIL with the
    event loop, so each microsecond it holds it is one the request path waits (COPY, which this
    replaced, adapted every value in Python: ~50 us of GIL per record, measured). All or nothing:
    a replayed record, a torn line or a value the database refuses sends the batch down the ORM's
    path, which skips stored records and sets refused lines aside one by one.
    """
    if connection.vendor != "postgresql":
        return False
    try:
        with connection.wrap_database_errors:
            connection.ensure_connection()
            # Server-side binding: Django's client-side cursor would quote the whole payload into the SQL.
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(INSERT_FROM_JSON, [Jsonb(b"[" + b",".join(lines) + b"]", dumps=_as_is)])
    except (DataError, IntegrityError):
        return False
    return True


def insert_missing(lines: list[bytes], directory: Path) -> int:
    """Inserts the lines whose record_id is not stored yet (the ORM's way: skips, never overwrites); how many."""
    try:
        rows, refused = _decoded(lines)
        ids = [fields.get("record_id") for _, fields in rows]
        stored = set(map(str, AuditRecord.objects.filter(record_id__in=ids).values_list("record_id", flat=True)))
        missing = [(line, fields) for line, fields in rows if fields.get("record_id") not in stored]
        refused += _bulk_created(missing)
        _keep_refused(refused, directory / REJECTED_FILE)
        return len(missing) - len(refused)
    finally:
        with contextlib.suppress(DatabaseError):
            connection.close()


def _as_is(payload: bytes) -> bytes:
    return payload


def _decoded(lines: list[bytes]) -> tuple[list[tuple[bytes, dict]], list[bytes]]:
    rows, refused = [], []
    for line in lines:
        try:
            fields = orjson.loads(line)
        except orjson.JSONDecodeError:
            fields = None
        if isinstance(fields, dict):
            rows.append((line, fields))
        else:
            refused.append(line)
    return rows, refused


def _bulk_created(rows: list[tuple[bytes, dict]]) -> list[bytes]:
    """The ORM's way, keyed on record_id: records already stored are skipped, refused ones set aside."""
    records, refused = [], []
    for line, fields in rows:
        try:
            records.append((line, audit_model_from(fields)))
        except ROW_ERRORS:
            refused.append(line)
    try:
        AuditRecord.objects.bulk_create([record for _, record in records], ignore_conflicts=True)
    except ROW_ERRORS:
        refused += _insert_one_by_one(records)
    return refused


def _insert_one_by_one(records: list[tuple[bytes, AuditRecord]]) -> list[bytes]:
    refused = []
    for line, record in records:
        try:
            AuditRecord.objects.bulk_create([record], ignore_conflicts=True)
        except ROW_ERRORS:
            refused.append(line)
    return refused


def _keep_refused(lines: list[bytes], path: Path) -> None:
    if not lines:
        return
    logger.error("the database refused %d audit records; they are kept in %s", len(lines), path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, b"".join(lines))
        finally:
            os.close(fd)
    except OSError:
        # Their heads (record and request ids, time, key prefix) at least, never their bodies.
        heads = [line[:200].decode(errors="replace") for line in lines]
        logger.exception("could not keep %d refused audit records: %s", len(lines), heads)


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
        "bodies_truncated": request_cut or forwarded_cut or response_cut or exchange.response_truncated,
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
    prompt = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _count(usage.get("completion_tokens", usage.get("output_tokens")))
    total = _count(usage.get("total_tokens"))
    if total is None and prompt is not None and completion is not None:
        total = _count(prompt + completion)  # Anthropic's usage has no total
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _cost(exchange: Exchange) -> dict[str, Any]:
    usage = exchange.usage
    return {
        "cached_tokens": usage.cached_tokens if usage is not None and exchange.cost_status == "priced" else None,
        # A string: exact in the spool line, and numeric to PostgreSQL.
        "cost_usd": None if exchange.cost_usd is None else str(exchange.cost_usd),
        "cost_status": exchange.cost_status,
        "price": exchange.price,
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
    # inet_pton, not the ipaddress module: the same check at a twentieth of the cost.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value or "")
            return value
        except (OSError, ValueError):
            continue
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
