"""The one upstream HTTP client per worker process, forwarding and header hygiene."""

import asyncio
import re
from urllib.parse import unquote

import aiohttp
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from proxy.errors import ProxyError, invalid_request, upstream_timeout, upstream_unreachable

# RFC 9110 §7.6.1 hop-by-hop headers, plus the ones a proxy must recompute itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
# The client's credentials never leave aiproxy; cookies belong to the admin, not the upstream.
CLIENT_ONLY = frozenset({"authorization", "api-key", "cookie", "accept-encoding", "x-request-id"})
# The upstream's framing and identity headers; ours are set by the ASGI server.
UPSTREAM_ONLY = frozenset({"content-encoding", "server", "date", "set-cookie"})

UPSTREAM_ERRORS = (httpx.HTTPError, aiohttp.ClientError, asyncio.TimeoutError)

_client: httpx.AsyncClient | None = None
_transport: AiohttpTransport | None = None


def client() -> httpx.AsyncClient:
    """The process's shared client (and its transport), created on first use inside the serving event loop."""
    global _client, _transport
    if _client is None:
        # httpx's API over aiohttp's transport: ~1.8x less CPU per request than
        # httpx's own transport (../shared/PERFORMANCE.md), still event-by-event for streams.
        limits = httpx.Limits(
            max_connections=settings.UPSTREAM_MAX_CONNECTIONS,
            max_keepalive_connections=settings.UPSTREAM_MAX_CONNECTIONS,
        )
        _transport = AiohttpTransport(limits=limits, trust_env=False)
        _client = httpx.AsyncClient(transport=_transport, limits=limits)
    return _client


def timeout_extension() -> dict[str, float]:
    """Read per request, so a settings change applies without a new client."""
    return {
        "connect": settings.UPSTREAM_CONNECT_TIMEOUT,
        "read": settings.UPSTREAM_READ_TIMEOUT,
        "write": settings.UPSTREAM_READ_TIMEOUT,
        "pool": settings.UPSTREAM_POOL_TIMEOUT,
    }


def transport() -> AiohttpTransport:
    client()
    return _transport


async def close() -> None:
    global _client, _transport
    if _client is not None:
        await _client.aclose()
        _client = _transport = None


def request_headers(incoming, *, request_id: str, content_type: str | None) -> dict[str, str]:
    """The headers to send upstream, from the client's (any case) less credentials and hop-by-hop ones."""
    # Headers the client's Connection header names are hop-by-hop too (RFC 9110 §7.6.1).
    nominated = {token.strip().lower() for token in incoming.get("connection", "").split(",")}
    headers = {}
    for name, value in incoming.items():
        name = name.lower()
        if name not in HOP_BY_HOP and name not in CLIENT_ONLY and name not in nominated and name != "content-type":
            headers[name] = value
    if content_type:
        headers["content-type"] = content_type
    # Uncompressed on loopback: we read the bodies (policy, audit) and relay them as they are.
    headers["accept-encoding"] = "identity"
    headers["x-request-id"] = request_id
    if settings.LITELLM_API_KEY:
        headers["authorization"] = f"Bearer {settings.LITELLM_API_KEY}"
    return headers


def response_headers(upstream: httpx.Response) -> list[tuple[str, str]]:
    return [
        (name, value)
        for name, value in upstream.headers.multi_items()
        if name not in HOP_BY_HOP and name not in UPSTREAM_ONLY
    ]


async def send(*, method: str, path: str, query: bytes, headers: dict[str, str], body: bytes | None) -> httpx.Response:
    """Send a request upstream; the response body is left open for the caller to read or stream."""
    url = settings.LITELLM_BASE_URL + path
    if query:
        url += "?" + query.decode("latin-1")
    request = httpx.Request(method, url, headers=headers, content=body, extensions={"timeout": timeout_extension()})
    try:
        # Straight to the transport: the client's redirect, auth and cookie layers have no work to do
        # for a proxy (the upstream's cookies and redirects are the client's business) and cost ~10% CPU.
        response = await transport().handle_async_request(request)
    except UPSTREAM_ERRORS as exc:
        raise upstream_error(exc) from exc
    response.request = request
    return response


def upstream_error(exc: BaseException) -> ProxyError:
    """502 when the upstream is unreachable or broke the connection, 504 when it was too slow.

    httpx-aiohttp maps every aiohttp connection error to httpx.ConnectTimeout, so
    the cause, not the mapped type, says which it was.
    """
    return upstream_timeout() if is_timeout(exc) else upstream_unreachable()


def is_timeout(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    if isinstance(cause, asyncio.TimeoutError):
        return True
    return cause is exc and isinstance(exc, httpx.TimeoutException)


_FORBIDDEN_RAW = re.compile(r"%2e|%2f|%5c|%00|\\|//|://|@", re.IGNORECASE)


def safe_upstream_path(raw_path: bytes) -> str:
    """The client's path, refused with 400 if it could step outside the upstream's base URL."""
    raw = raw_path.decode("latin-1")
    decoded = unquote(raw)
    segments = decoded.split("/")
    if _FORBIDDEN_RAW.search(raw) or ".." in segments or "." in segments or not raw.startswith("/"):
        raise invalid_request(f"The path {raw!r} is not allowed.", code="invalid_path")
    return raw
