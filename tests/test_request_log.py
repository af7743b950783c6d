"""Request ids, aiproxy's own time, and one JSON log line per request without secrets."""

import json
import logging
import time

import httpx
import pytest

from aiproxy.logging import JsonFormatter

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a very private prompt"}]}


def test_request_id_is_generated(live, alice_key):
    response = httpx.post(
        live.url + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {alice_key}"}
    )

    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("incoming", "honoured"),
    [("trace-123.abc:def", True), ("bad id with spaces", False), ("x" * 200, False), ("<script>", False)],
)
def test_well_formed_incoming_request_id_is_honoured(live, incoming, honoured):
    response = httpx.get(live.url + "/health", headers={"X-Request-ID": incoming})

    assert (response.headers["x-request-id"] == incoming) is honoured


def test_own_time_header_excludes_the_upstream_wait(live, alice_key):
    response = httpx.post(
        live.url + "/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {alice_key}", "x-fake-delay": "0.5"},
    )

    assert float(response.headers["x-aiproxy-time-ms"]) < 250


def test_one_json_line_per_request_without_keys_or_bodies(live, alice_key, caplog):
    caplog.set_level(logging.INFO, logger="aiproxy.access")

    response = httpx.post(
        live.url + "/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {alice_key}", "X-Request-ID": "log-test-1"},
    )
    time.sleep(0.05)

    lines = [r for r in caplog.records if r.name == "aiproxy.access" and r.fields["request_id"] == "log-test-1"]
    assert response.status_code == 200
    assert len(lines) == 1
    fields = lines[0].fields
    assert fields["key_prefix"] == alice_key[:12]
    assert fields["status"] == 200
    assert fields["upstream_status"] == 200
    assert fields["method"] == "POST"
    assert fields["path"] == "/v1/chat/completions"
    assert fields["duration_ms"] >= fields["upstream_ms"] > 0
    formatted = JsonFormatter().format(lines[0])
    assert json.loads(formatted)["request_id"] == "log-test-1"
    assert alice_key not in formatted
    assert "very private prompt" not in formatted
