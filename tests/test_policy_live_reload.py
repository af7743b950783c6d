"""A policy saved in the admin reaches every worker process within 2 seconds, no restart."""

import time

import httpx
import pytest
from django.db import connection

from policies.keys import api_key_create
from policies.models import Policy
from tests.processes import AiproxyProcess

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="two processes need a shared PostgreSQL database"),
]


def system_message_seen_by_upstream(fake_upstream, worker, key) -> str:
    response = httpx.post(
        worker.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": f"reload-{time.monotonic_ns()}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    received = next(
        r for r in reversed(fake_upstream.requests) if r.headers["x-request-id"] == response.headers["x-request-id"]
    )
    return received.json["messages"][0]["content"]


def test_policy_edit_reaches_two_workers_within_two_seconds(fake_upstream, tmp_path):
    policy = Policy.objects.create(name="live", system_context="Before the edit.")
    _, key = api_key_create(name="reload-app", policy=policy)
    with (
        AiproxyProcess(upstream_url=fake_upstream.url, log_path=tmp_path / "first.log") as first,
        AiproxyProcess(upstream_url=fake_upstream.url, log_path=tmp_path / "second.log") as second,
    ):
        workers = (first, second)
        assert {system_message_seen_by_upstream(fake_upstream, w, key) for w in workers} == {"Before the edit."}

        policy.system_context = "After the edit."
        policy.save()
        saved_at = time.monotonic()

        pending = set(workers)
        while pending:
            pending = {
                w for w in pending if system_message_seen_by_upstream(fake_upstream, w, key) != "After the edit."
            }
            assert time.monotonic() - saved_at < 2.0, f"{len(pending)} worker(s) still on the old policy after 2 s"
            time.sleep(0.05)
