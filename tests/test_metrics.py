"""GET /metrics: what /v1 requests add to it, who may read it, and one view over two gunicorn workers."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import httpx
import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from policies.keys import api_key_create
from proxy.metrics import client_allowed
from tests.processes import AiproxyProcess

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


def scrape(url: str, **headers: str) -> dict[tuple, float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    response = httpx.get(url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def chat(url: str, key: str | None, **headers: str) -> httpx.Response:
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=10)


def test_requests_are_counted_by_endpoint_status_and_key(live, alice_key):
    before = scrape(live.url)
    assert chat(live.url, alice_key).status_code == 200
    assert chat(live.url, alice_key, **{"x-fake-status": "429"}).status_code == 429
    assert chat(live.url, "aip-not-a-key").status_code == 401
    embedding = {"model": "text-embedding-3-small", "input": "Hi"}
    assert httpx.post(live.url + "/v1/embeddings", json=embedding, headers={"Authorization": f"Bearer {alice_key}"})
    after = scrape(live.url)

    def added(**labels: str) -> float:
        return value(after, "aiproxy_requests_total", **labels) - value(before, "aiproxy_requests_total", **labels)

    prefix = alice_key[:12]
    assert added(endpoint="chat", status="200", key_prefix=prefix) == 1
    assert added(endpoint="chat", status="429", key_prefix=prefix) == 1
    # An unknown key is counted without a prefix: callers cannot mint label values.
    assert added(endpoint="chat", status="401", key_prefix="") == 1
    assert added(endpoint="embeddings", status="200", key_prefix=prefix) == 1


def test_durations_and_streams(live, alice_key):
    before = scrape(live.url)
    streamed = httpx.post(
        live.url + "/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    assert streamed.status_code == 200
    assert chat(live.url, None).status_code == 401  # never reaches the upstream
    after = scrape(live.url)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert added("aiproxy_streams_total", endpoint="chat", outcome="ok") == 1
    assert added("aiproxy_request_duration_seconds_count", endpoint="chat") == 2
    assert added("aiproxy_request_duration_seconds_bucket", endpoint="chat", le="+Inf") == 2
    assert added("aiproxy_upstream_duration_seconds_count", endpoint="chat") == 1
    assert added("aiproxy_upstream_duration_seconds_sum", endpoint="chat") > 0
    assert ("aiproxy_audit_backlog", ()) in after


def test_limit_refusals_spend_and_redis_failures_are_counted(live, settings):
    from decimal import Decimal

    from asgiref.sync import async_to_sync

    from policies.cache import config_cache
    from policies.keys import api_key_create
    from policies.models import ModelPrice, Policy

    ModelPrice.objects.update_or_create(
        pattern="gpt-4o-mini",
        defaults={"input_per_million": Decimal(1000), "output_per_million": Decimal(1000)},
    )
    async_to_sync(config_cache.check_for_changes)()
    key = api_key_create(name="one-a-minute", policy=Policy.objects.create(name="one-a-minute", rpm_limit=1))[1]
    before = scrape(live.url)

    assert [chat(live.url, key).status_code for _ in range(2)] == [200, 429]
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: failing open, this process counts
    assert chat(live.url, key).status_code == 429
    after = scrape(live.url)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert added("aiproxy_limit_refusals_total", limit="rpm") == 2
    # The answered request: 1 prompt + 4 completion tokens at $0.001 each.
    assert added("aiproxy_spend_usd_total", key_prefix=key[:12]) == pytest.approx(0.005)
    assert added("aiproxy_limits_redis_failures_total") >= 1


def test_metrics_are_for_loopback_only_by_default(live, settings):
    assert httpx.get(live.url + "/metrics").status_code == 200
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "::1/128"]
    assert httpx.get(live.url + "/metrics").status_code == 403


def test_a_metrics_token_is_required_once_set(live, settings):
    settings.METRICS_TOKEN = "scrape-secret"
    missing = httpx.get(live.url + "/metrics")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(live.url + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert scrape(live.url, Authorization="Bearer scrape-secret")


def test_metrics_can_be_turned_off(live, settings, alice_key):
    settings.METRICS_ENABLED = False
    assert chat(live.url, alice_key).status_code == 200
    assert httpx.get(live.url + "/metrics").status_code == 404


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", False),
        ("", False),
    ],
)
def test_allowed_networks(settings, address, allowed):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128", ""]
    assert client_allowed(address) is allowed


# --- two gunicorn workers -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="two worker processes need a shared PostgreSQL database")
def test_two_gunicorn_workers_report_one_set_of_metrics(fake_upstream, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by a previous run")
    _, key = api_key_create(name="metrics-app")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "WEB_CONCURRENCY": "2"}
    gunicorn = AiproxyProcess(
        upstream_url=fake_upstream.url, log_path=tmp_path / "gunicorn.log", env=env, gunicorn=True
    )
    with gunicorn as server:
        assert not (metrics_dir / "counter_1.db").exists()
        # Concurrent slow requests on fresh connections, so that both workers take some.
        sent = 0
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while len({path.name for path in metrics_dir.glob("counter_*.db")}) < 2:
                assert sent < 400, "one worker took every request"
                batch = [pool.submit(chat, server.url, key, **{"x-fake-delay": "0.05"}) for _ in range(16)]
                assert all(future.result().status_code == 200 for future in batch)
                sent += len(batch)

        prefix = key[:12]
        for _ in range(4):  # whichever worker answers, it reports both workers' counts
            samples = scrape(server.url)
            assert value(samples, "aiproxy_requests_total", endpoint="chat", status="200", key_prefix=prefix) == sent
            assert value(samples, "aiproxy_request_duration_seconds_count", endpoint="chat") == sent

        # Each worker's backlog gauge goes back to 0 once its audit records are in the database.
        deadline = time.monotonic() + 10
        while value(scrape(server.url), "aiproxy_audit_backlog") != 0:
            assert time.monotonic() < deadline, "the audit backlog gauge did not drain"
            time.sleep(0.2)
        assert server.signal(signal.SIGTERM) == 0
    # Dead workers' live gauges are gone: a restarted worker does not add to them.
    assert not list(metrics_dir.glob("gauge_livesum_*.db"))
