"""The /v1 views: authenticate → plan → forward → respond → record, and the health checks."""

import asyncio
import contextlib
import functools
import logging
import re
import time

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, HttpResponsePermanentRedirect, StreamingHttpResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt

from policies import engine
from policies.cache import KeyContext
from policies.streams import StreamRewriter, stream_needs_rewrite
from proxy import accounting, ownership, upstream
from proxy.audit_journal import audit_journal
from proxy.audit_writer import audit_writer
from proxy.endpoints import MODELS, OTHER, RESPONSE_CANCEL, RESPONSE_INPUT_ITEMS, RESPONSE_OBJECT, Endpoint
from proxy.errors import (
    PolicyRejected,
    ProxyError,
    endpoint_not_allowed,
    internal_error,
    invalid_request,
    json_response,
    not_found,
    upstream_bad_response,
)
from proxy.exchange import Exchange, Outcome
from proxy.inbound import (
    authenticate,
    begin_exchange,
    check_method,
    multipart_model,
    parse_json_body,
    read_body,
)
from proxy.limiter import limiter
from proxy.streaming import BinaryRelay, SseRelay

logger = logging.getLogger(__name__)

# nginx's status for "the client closed the connection before the response": recorded, never sent.
CLIENT_CLOSED_REQUEST = 499
POLICY_HEADER = "X-Aiproxy-Policy"
POLICY_VERSION_HEADER = "X-Aiproxy-Policy-Version"
# How long /ready waits for each of the database and the upstream before it calls it unavailable.
READY_CHECK_SECONDS = 2.0


def proxy_view(endpoint: Endpoint | None = None):
    """A /v1 view's frame: the exchange begins first and always finishes, whatever the view raises.

    ProxyError becomes its OpenAI-shaped answer; anything else (a bug) a 500 in the same
    shape, logged — and either way the exchange is recorded.
    """

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            served = endpoint or kwargs["endpoint"]
            exchange = begin_exchange(request, served)
            try:
                check_method(request, served)
                exchange.key = await authenticate(request)
                check_surface(exchange.key, served)
                return await view(request, exchange, *args, **kwargs)
            except ProxyError as error:
                return failed(exchange, error, served)
            except asyncio.CancelledError:
                # The client left before the answer: still one record, with what was known by then.
                exchange.status = exchange.status or CLIENT_CLOSED_REQUEST
                exchange.finish(outcome=Outcome.CLIENT_DISCONNECTED)
                raise
            except Exception:
                logger.exception("request %s failed inside aiproxy", exchange.request_id)
                return failed(exchange, internal_error(), served)

        return wrapper

    return decorate


@proxy_view()
async def relay(request, exchange: Exchange, endpoint: Endpoint) -> HttpResponse:
    """Every governed /v1 endpoint: the key's policy applied both ways, the exchange recorded."""
    return await relay_steps(request, exchange, endpoint, endpoint.upstream_path)


async def relay_steps(request, exchange: Exchange, endpoint: Endpoint, path: str) -> HttpResponse:
    raw = read_body(request)
    forwarded = plan_request(request, exchange, endpoint, raw)
    for param, object_id in endpoint.surface.referenced_objects(exchange.request_body):
        await ownership.require_owner(exchange.key, object_id, param=param)
    if settings.AUDIT_ENABLED:
        audit_journal.begin(exchange)  # from here, even a killed worker leaves this request's record
    upstream_response = await forward(request, exchange, endpoint, path, forwarded)
    return await respond(exchange, endpoint, upstream_response)


@proxy_view(RESPONSE_OBJECT)
async def response_object(request, exchange: Exchange, response_id: str) -> HttpResponse:
    """GET or DELETE a stored response: only the key that created it may."""
    return await stored_response(request, exchange, RESPONSE_OBJECT, response_id, "")


@proxy_view(RESPONSE_INPUT_ITEMS)
async def response_input_items(request, exchange: Exchange, response_id: str) -> HttpResponse:
    return await stored_response(request, exchange, RESPONSE_INPUT_ITEMS, response_id, "/input_items")


@proxy_view(RESPONSE_CANCEL)
async def response_cancel(request, exchange: Exchange, response_id: str) -> HttpResponse:
    return await stored_response(request, exchange, RESPONSE_CANCEL, response_id, "/cancel")


async def stored_response(
    request, exchange: Exchange, endpoint: Endpoint, response_id: str, suffix: str
) -> HttpResponse:
    await ownership.require_owner(exchange.key, response_id)
    # The route admits only characters that are safe in a path.
    return await relay_steps(request, exchange, endpoint, f"/v1/responses/{response_id}{suffix}")


@proxy_view(MODELS)
async def models_list(request, exchange: Exchange) -> HttpResponse:
    """GET /v1/models: the upstream's list, reduced to what this key may use, plus its aliases."""
    upstream_response = await forward(request, exchange, MODELS, MODELS.upstream_path, None)
    return await respond(exchange, MODELS, upstream_response, rewrite=models_rewrite(exchange.key))


@proxy_view(MODELS)
async def model_detail(request, exchange: Exchange, model: str) -> HttpResponse:
    """GET /v1/models/<id>: 404 for a model the key may not use; aliases answer as themselves."""
    spec = exchange.key.policy
    if not engine.model_allowed(spec, model):
        raise invalid_request(f"The model '{model}' does not exist.", code="model_not_found", status=404)
    target = spec.model_aliases.get(model, model)
    path = upstream.safe_upstream_path(f"/v1/models/{target}".encode())
    upstream_response = await forward(request, exchange, MODELS, path, None)
    return await respond(exchange, MODELS, upstream_response, rewrite=lambda body: {**body, "id": model})


async def v1_other(request, path: str = "") -> HttpResponse:
    """Any /v1 path no route names: a variant of a governed path is served as that surface (or refused),
    never forwarded as it is; any other path is closed unless the key's policy opens it."""
    canonical = _SLASH_RUNS.sub("/", request.path).rstrip("/")
    urlconf = getattr(request, "urlconf", None)
    for candidate in (canonical, canonical.lower()):
        with contextlib.suppress(Resolver404):
            match = resolve(candidate, urlconf)
            if match.func in (v1_other, unknown_path):
                continue
            if candidate == canonical:
                return await match.func(request, *match.args, **match.kwargs)
            return await governed_variant_refused(request, canonical=candidate)
    return await passthrough(request)


_SLASH_RUNS = re.compile(r"/{2,}")
# LiteLLM also serves its model endpoints under other prefixes (/v1/engines/{model}/chat/completions,
# /openai/deployments/{model}/...): a passthrough path ending like one is a way around the policy.
_MODEL_ENDPOINT_END = re.compile(
    r"/(chat/completions|completions|responses|messages|embeddings|moderations|images/generations"
    r"|audio/(speech|transcriptions|translations)|messages/count_tokens|rerank|generatecontent)/*$",
    re.IGNORECASE,
)


@proxy_view(OTHER)
async def governed_variant_refused(request, exchange: Exchange, canonical: str) -> HttpResponse:
    raise invalid_request(f"Unknown path: {request.path}; did you mean {canonical}?", code="not_found", status=404)


@proxy_view(OTHER)
async def passthrough(request, exchange: Exchange) -> HttpResponse:
    """A path the key's policy opened (passthrough_paths): forwarded as it is, with the upstream's key."""
    if not exchange.key.policy.passthrough_allowed(request.path) or _MODEL_ENDPOINT_END.search(request.path):
        raise not_found(request.path)
    path = upstream.safe_upstream_path(request.scope["raw_path"] or b"/")
    return await relay_steps(request, exchange, OTHER, path)


@csrf_exempt  # a POST here is answered with JSON, never Django's HTML CSRF page
async def unknown_path(request, path: str = "") -> HttpResponse:
    """JSON 404 for any unknown path; '/admin' style paths get their trailing slash."""
    if not request.path.endswith("/"):
        with contextlib.suppress(Resolver404):
            if resolve(request.path + "/").func not in (unknown_path, v1_other):
                return HttpResponsePermanentRedirect(request.path + "/")
    return not_found(request.path).response()


def server_error(request) -> HttpResponse:
    """handler500: even a bug outside /v1 answers in JSON, never Django's HTML page."""
    return internal_error().response()


async def health(request) -> HttpResponse:
    return json_response({"status": "ok"})


async def ready(request) -> HttpResponse:
    """Ready when the database answers and the upstream is reachable; 503 says which is not."""
    problems = {}
    try:
        # Off the shared sync thread and bounded: an unreachable database must not hold /ready (or anyone else).
        await asyncio.wait_for(sync_to_async(_database_ping, thread_sensitive=False)(), READY_CHECK_SECONDS)
    except Exception as exc:
        problems["database"] = type(exc).__name__
    try:
        await upstream.ping("/health/liveliness", seconds=READY_CHECK_SECONDS)
    except Exception as exc:
        problems["upstream"] = type(exc).__name__
    audit = audit_writer.status()
    if audit["problem"]:
        problems["audit"] = audit["problem"]
    limits = limiter.status()
    body = {"audit_backlog": audit["backlog"], "limits": limits["limits"]}
    if limits["problem"] and settings.RATE_LIMIT_REDIS_FAILURE == "closed":
        problems["limits"] = limits["problem"]
    if problems:
        return json_response({"status": "unavailable", "problems": problems, **body}, status=503)
    if limits["problem"]:
        # Failing open: still serving, with each process's own counters; a balancer keeps sending traffic.
        return json_response({"status": "degraded", "problems": {"limits": limits["problem"]}, **body})
    return json_response({"status": "ready", **body})


def _database_ping() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


# --- the steps -------------------------------------------------------------------------


def plan_request(request, exchange: Exchange, endpoint: Endpoint, raw: bytes) -> bytes:
    """The bytes to forward, after the key's policy; raises PolicyRejected."""
    exchange.request_content_type = request.content_type or ""
    if endpoint.body == "raw":
        body = passthrough_body(exchange.request_content_type, raw)
        exchange.request_body = exchange.forwarded_body = body
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str):
            # A passthrough body naming a model (a fine-tuning job, a batch) still needs the model allowed.
            exchange.model_requested = exchange.model_upstream = model
            check_model_allowed(exchange.key, model)
        return raw
    if endpoint.body == "multipart":
        exchange.request_body = exchange.forwarded_body = raw
        model = multipart_model(request)
        exchange.model_requested = exchange.model_upstream = model
        if model is not None:
            check_model_allowed(exchange.key, model)
        return raw
    body = parse_json_body(request, raw)
    exchange.request_body = body
    exchange.stream = body.get("stream") is True
    exchange.model_requested = body.get("model")
    plan = apply_policy(exchange, endpoint, body)
    if endpoint.requires_model and not plan.body.get("model"):
        raise invalid_request("You must provide a model parameter.", code="missing_required_parameter", param="model")
    if not settings.ENABLE_REQUEST_MODIFICATION or not plan.modifications:
        exchange.forwarded_body = body
        exchange.model_upstream = body.get("model")
        return with_stream_usage(exchange, endpoint, body, raw)
    exchange.forwarded_body = plan.body
    exchange.modifications = plan.modifications
    exchange.model_upstream = plan.upstream_model
    return with_stream_usage(exchange, endpoint, plan.body, None)


def with_stream_usage(exchange: Exchange, endpoint: Endpoint, body: dict, raw: bytes | None) -> bytes:
    """A stream is asked to report its usage (its cost and token limits need it); when the client did not
    ask for that itself, the usage event is kept from it (SseRelay)."""
    if exchange.stream and (asked := endpoint.surface.with_stream_usage(body)) is not None:
        exchange.forwarded_body = asked
        exchange.hide_stream_usage = True
        return orjson.dumps(asked)
    return raw if raw is not None else orjson.dumps(body)


def passthrough_body(content_type: str, raw: bytes) -> dict | bytes | None:
    """A forwarded-as-is body, readable in the audit record when it is a JSON object."""
    if not raw:
        return None
    if content_type.endswith("json"):
        with contextlib.suppress(orjson.JSONDecodeError):
            if isinstance(body := orjson.loads(raw), dict):
                return body
    return raw


def apply_policy(exchange: Exchange, endpoint: Endpoint, body: dict) -> engine.RequestPlan:
    context = engine.RequestContext(key_name=exchange.key.key_name, client_ip=exchange.client_ip)
    try:
        return engine.apply_request(exchange.key.policy, endpoint.surface, body, context)
    except engine.PolicyRejection as rejection:
        raise PolicyRejected(
            status=rejection.status, message=rejection.message, code=rejection.code, param=rejection.param
        ) from rejection


def check_surface(key: KeyContext, endpoint: Endpoint) -> None:
    group = endpoint.surface.group
    if group and not key.policy.surface_allowed(group):
        raise endpoint_not_allowed(group)


def check_model_allowed(key: KeyContext, model: str) -> None:
    if not engine.model_allowed(key.policy, model):
        raise PolicyRejected(
            status=403,
            message=f"This API key may not use the model '{model}'.",
            code="model_not_allowed",
            param="model",
        )


async def forward(
    request, exchange: Exchange, endpoint: Endpoint, path: str, body: bytes | None
) -> upstream.UpstreamResponse:
    await accounting.admit(exchange, endpoint.surface)  # the key's limits: 429 here, before the upstream
    headers = upstream.request_headers(
        request.headers, request_id=exchange.request_id, content_type=request.META.get("CONTENT_TYPE")
    )
    exchange.mark_upstream_start()
    response = await upstream.send(
        method=request.method,
        path=path,
        query=request.scope.get("query_string", b""),
        headers=headers,
        body=body if body else None,
    )
    exchange.mark_upstream_headers(response.status_code)
    if not 100 <= response.status_code <= 599:
        await response.aclose()
        raise upstream_bad_response(f"HTTP status {response.status_code}")
    return response


async def respond(exchange: Exchange, endpoint: Endpoint, upstream_response: upstream.UpstreamResponse, rewrite=None):
    content_type = upstream_response.headers.get("content-type", "")
    exchange.response_content_type = content_type
    exchange.status = upstream_response.status_code
    if endpoint.surface.stores_objects:
        exchange.on_finish(remember_stored_object)
    if content_type.startswith("text/event-stream"):
        exchange.stream = True
        relay = SseRelay(upstream_response, exchange, endpoint.surface, stream_rewriter(exchange, endpoint))
        response = StreamingHttpResponse(relay, status=exchange.status)
    elif content_type.startswith("application/json"):
        content = await read_json_response(exchange, endpoint, upstream_response, rewrite)
        if isinstance(content, BinaryRelay):
            response = StreamingHttpResponse(content, status=exchange.status)
        else:
            response = HttpResponse(upstream.without_upstream_key(content), status=exchange.status)
            exchange.finish()
    else:
        response = StreamingHttpResponse(BinaryRelay(upstream_response, exchange), status=exchange.status)
    for name, value in upstream.response_headers(upstream_response):
        response[name] = value
    add_policy_headers(response, exchange)
    return response


async def read_json_response(
    exchange: Exchange, endpoint: Endpoint, upstream_response: upstream.UpstreamResponse, rewrite
):
    try:
        content = await upstream_response.aread_at_most(settings.JSON_REWRITE_MAX_BYTES)
    except upstream.UPSTREAM_ERRORS as exc:
        await upstream_response.aclose()
        raise upstream.upstream_error(exc) from exc
    exchange.mark_first_byte()
    if content is None:
        # Too large to parse and rewrite within bounded memory: relayed as it is, and flagged.
        exchange.response_truncated = True
        return BinaryRelay(upstream_response, exchange, prefix=upstream_response.read_so_far)
    await upstream_response.aclose()
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        exchange.response_body = content
        return content
    exchange.response_body = body
    if not isinstance(body, dict) or exchange.status >= 400:
        return content
    exchange.stored_id = endpoint.surface.stored_id(body)
    if rewrite is not None:
        body = rewrite(body)
    if settings.ENABLE_RESPONSE_MODIFICATION:
        body = engine.apply_response(exchange.key.policy, endpoint.surface, body, response_context(exchange))
    if body is exchange.response_body:
        return content
    exchange.response_body = body
    return orjson.dumps(body)


def response_context(exchange: Exchange) -> engine.ResponseContext:
    return engine.ResponseContext(
        original_model=exchange.model_requested,
        modifications=tuple(exchange.modifications),
        processing_ms=round((time.perf_counter() - exchange.started - exchange.upstream_wait_seconds()) * 1000, 3),
    )


def stream_rewriter(exchange: Exchange, endpoint: Endpoint) -> StreamRewriter | None:
    spec = exchange.key.policy
    if settings.ENABLE_RESPONSE_MODIFICATION and stream_needs_rewrite(spec, endpoint.surface):
        return StreamRewriter(spec, endpoint.surface, hold_max=settings.STREAM_REDACTION_HOLD_MAX)
    return None


def remember_stored_object(exchange: Exchange) -> None:
    """A response the upstream stored for this key: its reads on this worker need not wait for the audit log."""
    if exchange.stored_id and exchange.key is not None and (exchange.status or 0) < 400:
        ownership.owner_remember(stored_id=exchange.stored_id, key_id=exchange.key.key_id)


def models_rewrite(key: KeyContext):
    return lambda body: engine.filter_models_list(key.policy, body)


def add_policy_headers(response: HttpResponse, exchange: Exchange) -> None:
    """The policy that applied, and the key's rate-limit state (OpenAI's x-ratelimit-* headers)."""
    key = exchange.key
    if key is not None and key.policy.name:
        response[POLICY_HEADER] = key.policy.name
        response[POLICY_VERSION_HEADER] = str(key.policy.version)
    for name, value in exchange.rate_limit_headers.items():
        response[name] = value


def failed(exchange: Exchange, error: ProxyError, endpoint: Endpoint) -> HttpResponse:
    exchange.fail(error, outcome_for(error))
    response = json_response(endpoint.surface.error_body(error.body()["error"]), status=error.status)
    add_policy_headers(response, exchange)
    for name, value in getattr(error, "headers", {}).items():
        response[name] = value
    exchange.finish()
    return response


def outcome_for(error: ProxyError) -> Outcome:
    if isinstance(error, accounting.RateLimited):
        return Outcome.RATE_LIMITED
    if isinstance(error, PolicyRejected):
        return Outcome.REJECTED
    if error.status == 401:
        return Outcome.AUTH_FAILED
    if error.type == "upstream_error":
        return Outcome.UPSTREAM_ERROR
    if error.status >= 500:
        return Outcome.PROXY_ERROR
    return Outcome.INVALID_REQUEST
