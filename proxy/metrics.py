"""Prometheus metrics: what every /v1 exchange adds to them, and GET /metrics, with or without gunicorn workers."""

import asyncio
import functools
import hmac
import ipaddress
import os

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as render
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.accounting import RateLimited
from proxy.audit_writer import audit_writer
from proxy.exchange import Exchange

# LLM calls run from milliseconds (embeddings, errors) to minutes (long generations).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BACKLOG_REFRESH_SECONDS = 1.0

# The key prefix label is bounded by the number of keys operators create; a request with an
# unknown key has no prefix, so callers cannot mint label values.
REQUESTS = Counter("aiproxy_requests", "Finished /v1 requests.", ["endpoint", "status", "key_prefix"])
REQUEST_SECONDS = Histogram(
    "aiproxy_request_duration_seconds",
    "Time from request to last byte sent, per /v1 endpoint.",
    ["endpoint"],
    buckets=DURATION_BUCKETS,
)
UPSTREAM_SECONDS = Histogram(
    "aiproxy_upstream_duration_seconds",
    "Time from forwarding to the upstream's last byte, per /v1 endpoint.",
    ["endpoint"],
    buckets=DURATION_BUCKETS,
)
STREAMS = Counter("aiproxy_streams", "Finished streamed responses, by how they ended.", ["endpoint", "outcome"])
# livesum: the workers' backlogs add up, and a dead worker's last value does not linger.
AUDIT_BACKLOG = Gauge(
    "aiproxy_audit_backlog", "Audit records accepted and not yet in the database.", multiprocess_mode="livesum"
)

LIMIT_REFUSALS = Counter("aiproxy_limit_refusals", "Requests refused (429) by a key's limit or budget.", ["limit"])
SPEND = Counter("aiproxy_spend_usd", "What finished /v1 requests cost, from the price table.", ["key_prefix"])

_backlog_follower: asyncio.Task | None = None


def exchange_finished(exchange: Exchange) -> None:
    """The on_finish callback of every /v1 exchange: a few counter and histogram updates, no I/O."""
    endpoint, finished = exchange.endpoint, exchange.finished
    _child(REQUESTS, endpoint, exchange.status or "none", exchange.key.key_prefix if exchange.key else "").inc()
    _child(REQUEST_SECONDS, endpoint).observe(finished - exchange.started)
    if exchange.upstream_started is not None:
        _child(UPSTREAM_SECONDS, endpoint).observe(finished - exchange.upstream_started)
    if exchange.stream:
        _child(STREAMS, endpoint, exchange.outcome).inc()
    if isinstance(exchange.error, RateLimited):
        _child(LIMIT_REFUSALS, exchange.error.limit).inc()
    if exchange.cost_usd:
        _child(SPEND, exchange.key.key_prefix).inc(float(exchange.cost_usd))
    if audit_writer.backlog():
        _follow_backlog()


@functools.cache
def _child(metric, *labels):
    # labels() validates and locks on every call; the label sets are few, so each is looked up once.
    return metric.labels(*labels)


def _follow_backlog() -> None:
    # In multiprocess mode a gauge is only what its worker last wrote, and the writer drains
    # its backlog between requests: so a task keeps it current until the backlog is empty.
    global _backlog_follower
    loop = asyncio.get_running_loop()
    if _backlog_follower is None or _backlog_follower.done() or _backlog_follower.get_loop() is not loop:
        _backlog_follower = loop.create_task(_backlog_until_empty(), name="metrics-backlog")


async def _backlog_until_empty() -> None:
    while backlog := audit_writer.backlog():
        AUDIT_BACKLOG.set(backlog)
        await asyncio.sleep(BACKLOG_REFRESH_SECONDS)
    AUDIT_BACKLOG.set(0)


def metrics_view(request) -> HttpResponse:
    """GET /metrics in Prometheus text format, from allowed networks and with the token when one is set."""
    if not settings.METRICS_ENABLED:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    if not client_allowed(request.META.get("REMOTE_ADDR", "")):
        return HttpResponse("Forbidden.\n", status=403, content_type="text/plain")
    if settings.METRICS_TOKEN and not token_matches(request.headers.get("Authorization", "")):
        response = HttpResponse("A valid bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(render(registry()), content_type=CONTENT_TYPE_LATEST)


def registry() -> CollectorRegistry:
    """Every worker's values under gunicorn (read from PROMETHEUS_MULTIPROC_DIR), else this process's."""
    AUDIT_BACKLOG.set(audit_writer.backlog())
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    combined = CollectorRegistry()
    MultiProcessCollector(combined)
    return combined


def client_allowed(address: str) -> bool:
    try:
        client = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    client = getattr(client, "ipv4_mapped", None) or client
    networks = (ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_NETWORKS if network)
    return any(client in network for network in networks)


def token_matches(authorization: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode())
