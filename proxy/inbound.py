"""Reading what the client sent: who it is, and the body, with every bad input answered in 4xx."""

import logging

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError

from policies.cache import KeyContext, config_cache
from proxy import accounting, metrics
from proxy.audit_writer import audit_writer
from proxy.endpoints import Endpoint
from proxy.errors import (
    invalid_key,
    invalid_request,
    method_not_allowed,
    missing_key,
    request_too_large,
    service_unavailable,
)
from proxy.exchange import Exchange
from proxy.middleware import log_access

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "text/json")


def begin_exchange(request, endpoint: Endpoint) -> Exchange:
    exchange = Exchange(
        request_id=request.request_id,
        method=request.method,
        path=request.path,
        endpoint=endpoint.name,
        client_ip=request.META.get("REMOTE_ADDR"),
        user_agent=request.headers.get("User-Agent", "")[:300],
    )
    # First: the record and the access log need the exchange priced, and its limits settled.
    exchange.on_finish(accounting.finished)
    exchange.on_finish(lambda finished: log_access(finished.log_fields()))
    if settings.AUDIT_ENABLED:
        exchange.on_finish(audit_writer.record)
    if settings.METRICS_ENABLED:
        exchange.on_finish(metrics.exchange_finished)
    request.exchange = exchange
    return exchange


def check_method(request, endpoint: Endpoint) -> None:
    if request.method not in endpoint.methods:
        raise method_not_allowed(request.method, endpoint.methods)


def presented_key(request) -> str | None:
    """The key from `Authorization: Bearer` (OpenAI), `api-key` (Azure) or `x-api-key` (Anthropic)."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("Api-Key", "").strip() or request.headers.get("X-Api-Key", "").strip() or None


async def authenticate(request) -> KeyContext:
    raw_key = presented_key(request)
    if raw_key is None:
        raise missing_key()
    try:
        key = await config_cache.authenticate(raw_key)
    except DatabaseError as exc:
        logger.error("API key lookup failed: database unavailable", exc_info=True)
        raise service_unavailable() from exc
    if key is None:
        raise invalid_key()
    return key


def read_body(request) -> bytes:
    """The raw body, refused with 413 past MAX_REQUEST_BYTES."""
    limit = settings.MAX_REQUEST_BYTES
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise request_too_large(limit)
    try:
        body = request.body
    except RequestDataTooBig as exc:
        raise request_too_large(limit) from exc
    if len(body) > limit:
        raise request_too_large(limit)
    return body


def parse_json_body(request, raw: bytes) -> dict:
    content_type = request.content_type or ""
    if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise invalid_request(
            f"Content-Type must be application/json, not {content_type}.",
            code="unsupported_content_type",
            status=415,
        )
    if not raw.strip():
        raise invalid_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_json")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise invalid_request("'stream' must be true or false.", code="invalid_type", param="stream")
    if "model" in body and not isinstance(body["model"], str):
        raise invalid_request("'model' must be a string.", code="invalid_type", param="model")
    return body


def multipart_model(request) -> str | None:
    """The model named in a multipart upload's form, so that policy can check it."""
    content_type = request.content_type or ""
    if content_type != "multipart/form-data":
        raise invalid_request(
            f"Content-Type must be multipart/form-data, not {content_type or 'missing'}.",
            code="unsupported_content_type",
            status=415,
        )
    try:
        model, files = request.POST.get("model"), request.FILES
    except Exception as exc:  # Django raises several parser errors for a broken upload
        raise invalid_request("The multipart body could not be parsed.", code="invalid_multipart") from exc
    if "model" in files:
        # Sent as a file part, the model would pass unseen by the model check: refused.
        raise invalid_request("'model' must be a form field, not a file.", code="invalid_type", param="model")
    return model
