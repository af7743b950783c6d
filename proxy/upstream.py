"""The one upstream HTTP client per worker process, forwarding and header hygiene."""

import asyncio
import re
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
from django.conf import settings
from multidict import CIMultiDictProxy

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
# The upstream's framing and identity headers; ours are set by the ASGI server.
UPSTREAM_ONLY = frozenset({"content-encoding", "server", "date", "set-cookie"})

# aiohttp's timeouts are asyncio.TimeoutError subclasses (and ClientErrors); a cut body is a ClientPayloadError.
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
# Streams are relayed as the upstream sends them: a chunk is whatever has arrived, at most this much.
CHUNK_BYTES = 16 * 1024

_session: aiohttp.ClientSession | None = None


def client() -> aiohttp.ClientSession:
    """The process's one upstream session (its connection pool), created inside the serving event loop.

    aiohttp directly, not httpx over its aiohttp transport: httpx's request, header and response
    objects on top cost a quarter of a proxied request's CPU (bench/cpu.sh: 442-480 us with them,
    334-346 without; ../shared/PERFORMANCE.md measured the same on a bare view).
    """
    global _session
    if _session is None:
        connector = aiohttp.TCPConnector(
            limit=settings.UPSTREAM_MAX_CONNECTIONS, keepalive_timeout=settings.UPSTREAM_KEEPALIVE_SECONDS
        )
        # Bodies are relayed as the upstream sent them, never decompressed (we ask for identity anyway).
        _session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    return _session


def timeout() -> aiohttp.ClientTimeout:
    """Read per request, so a settings change applies without a new session.

    No total: a stream may run as long as the upstream keeps sending; each read waits at most
    UPSTREAM_READ_TIMEOUT, a connection from the pool UPSTREAM_POOL_TIMEOUT.
    """
    return aiohttp.ClientTimeout(
        total=None,
        connect=settings.UPSTREAM_POOL_TIMEOUT,
        sock_connect=settings.UPSTREAM_CONNECT_TIMEOUT,
        sock_read=settings.UPSTREAM_READ_TIMEOUT,
    )


async def close() -> None:
    global _session
    if _session is not None:
        await _session.close()
        _session = None


class UpstreamResponse:
    """An upstream response with its body still open: read it whole, or relay it chunk by chunk; then close."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code: int = response.status
        self.headers: CIMultiDictProxy[str] = response.headers
        self.read_so_far = b""

    async def aread(self) -> bytes:
        return await self._response.read()

    async def aread_at_most(self, limit: int) -> bytes | None:
        """The whole body, or None once it passes `limit` (what was read is then in read_so_far)."""
        declared = self._response.content_length
        if declared is not None and declared <= limit:
            return await self._response.read()  # the common case, at read()'s cost
        chunks, size = [], 0
        if declared is None:
            async for chunk in self._response.content.iter_chunked(CHUNK_BYTES):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    break
            else:
                return b"".join(chunks)
        self.read_so_far = b"".join(chunks)
        return None

    def aiter_raw(self):
        return self._response.content.iter_chunked(CHUNK_BYTES)

    async def aclose(self) -> None:
        # Back to the pool when the body was read to its end; closed otherwise (a client that left mid-stream).
        self._response.release()
        await self._response.wait_for_close()


# What a client may tell the upstream, by surface: the rest (credentials in any header, X-Forwarded-For and
# friends, x-litellm-* controls, Content-Encoding) stays here. UPSTREAM_FORWARD_HEADERS adds names.
FORWARDED_REQUEST_HEADERS = frozenset(
    {
        "accept",
        "user-agent",
        "idempotency-key",
        "openai-beta",
        "openai-organization",
        "openai-project",
        "anthropic-version",
        "anthropic-beta",
    }
)


def request_headers(incoming, *, request_id: str, content_type: str | None) -> dict[str, str]:
    """The headers to send upstream: an allowlist of the client's, then ours (type, encoding, id, key)."""
    extra, extra_prefixes = settings.UPSTREAM_FORWARD_HEADERS
    headers = {}
    for name, value in incoming.items():
        name = name.lower()
        if name in FORWARDED_REQUEST_HEADERS or name in extra or (extra_prefixes and name.startswith(extra_prefixes)):
            headers[name] = value
    if content_type:
        headers["content-type"] = content_type
    # Uncompressed on loopback: we read the bodies (policy, audit) and relay them as they are.
    headers["accept-encoding"] = "identity"
    headers["x-request-id"] = request_id
    if settings.LITELLM_API_KEY:
        headers["authorization"] = f"Bearer {settings.LITELLM_API_KEY}"
    return headers


# Query parameters that carry a credential (`?api_key=aip-…` would otherwise reach the upstream and its logs).
CREDENTIAL_PARAMS = frozenset(
    {"api_key", "api-key", "apikey", "key", "access_token", "token", "auth", "authorization", "x-api-key"}
)


def forwarded_query(query: bytes) -> bytes:
    """The client's query string without credential parameters (the common case, none, costs one scan)."""
    if not query:
        return query
    kept = [
        p for p in query.split(b"&") if unquote(p.split(b"=", 1)[0].decode("latin-1")).lower() not in CREDENTIAL_PARAMS
    ]
    return b"&".join(kept)


# Headers aiproxy decides itself: its own security and CORS policy, never the upstream's.
AIPROXY_DECIDES = frozenset(
    {"content-security-policy", "strict-transport-security", "content-disposition", "x-frame-options"}
)
# Every upstream response header a client never gets, as one set: one lookup per header.
NOT_RELAYED = HOP_BY_HOP | UPSTREAM_ONLY | AIPROXY_DECIDES
# LiteLLM's headers about itself (a model's api_base and id, the key's spend) and the raw headers of the
# provider behind it: internals of the upstream, kept from clients unless UPSTREAM_RELAY_HEADERS names them.
# (The upstream's x-ratelimit-* headers are relayed: for a key with limits of its own, aiproxy's replace them.)
INTERNAL_PREFIXES = ("x-litellm-", "llm_provider-")


def response_headers(upstream: UpstreamResponse) -> list[tuple[str, str]]:
    relayed = settings.UPSTREAM_RELAY_HEADERS
    headers = []
    for name, value in upstream.headers.items():
        name = name.lower()
        if name in NOT_RELAYED or name.startswith("access-control-"):
            continue
        if name.startswith(INTERNAL_PREFIXES) and name not in relayed:
            continue
        if name == "location":
            value = _location(value)
        headers.append((name, value))
    return headers


def without_upstream_key(content: bytes) -> bytes:
    """What goes to a client never quotes the upstream's key back (a careless upstream's error might)."""
    key = settings.LITELLM_API_KEY
    if not key or len(key) < 8:
        return content
    needle = key.encode()
    return content.replace(needle, b"[redacted]") if needle in content else content


def _location(value: str) -> str:
    """A redirect that names the upstream's own address points the client at the same path here instead."""
    base = settings.LITELLM_BASE_URL.rstrip("/")
    parsed, upstream_base = urlsplit(value), urlsplit(base)
    if not parsed.netloc or parsed.netloc.lower() != upstream_base.netloc.lower():
        return value
    path = parsed.path or "/"
    if upstream_base.path and path.startswith(upstream_base.path):
        path = path[len(upstream_base.path) :] or "/"
    return urlunsplit(("", "", path, parsed.query, parsed.fragment))


async def send(
    *, method: str, path: str, query: bytes, headers: dict[str, str], body: bytes | None
) -> UpstreamResponse:
    """Send a request upstream; the response body is left open for the caller to read or stream."""
    url = settings.LITELLM_BASE_URL + path
    query = forwarded_query(query)
    if query:
        url += "?" + query.decode("latin-1")
    try:
        response = await client().request(
            method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,  # the upstream's redirects and cookies are the client's business
            timeout=timeout(),
        )
    except UPSTREAM_ERRORS as exc:
        raise upstream_error(exc) from exc
    return UpstreamResponse(response)


async def ping(path: str, seconds: float) -> None:
    """Raises unless the upstream answers `path` within `seconds` (any status: it is up)."""
    async with client().get(settings.LITELLM_BASE_URL + path, timeout=aiohttp.ClientTimeout(total=seconds)):
        pass


def upstream_error(exc: BaseException) -> ProxyError:
    """502 when the upstream is unreachable or broke the connection, 504 when it was too slow."""
    return upstream_timeout() if is_timeout(exc) else upstream_unreachable()


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.TimeoutError)


_FORBIDDEN_RAW = re.compile(r"%2e|%2f|%5c|%00|\\|//|://|@", re.IGNORECASE)


def safe_upstream_path(raw_path: bytes) -> str:
    """The client's path, refused with 400 if it could step outside the upstream's base URL."""
    raw = raw_path.decode("latin-1")
    decoded = unquote(raw)
    segments = decoded.split("/")
    if _FORBIDDEN_RAW.search(raw) or ".." in segments or "." in segments or not raw.startswith("/"):
        raise invalid_request(f"The path {raw!r} is not allowed.", code="invalid_path")
    return raw
