"""A key's limits hold exactly across instances: two gunicorn masters (two workers each) sharing Redis and PostgreSQL.

Every request beyond a limit is answered 429 with OpenAI's headers and leaves a `rate_limited` record.
"""

import asyncio
import time
import uuid

import httpx
import pytest
from django.db import connection

from policies.keys import api_key_create
from policies.models import Policy
from proxy.models import AuditRecord
from tests.processes import AiproxyProcess

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="separate aiproxy processes need a shared PostgreSQL database"
)
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def two_instances(transactional_db, fake_upstream, tmp_path):
    prefix = f"aiproxy-test-{uuid.uuid4().hex[:8]}:"
    instances = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        env = {
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": prefix,
            "WEB_CONCURRENCY": "2",
            "AUDIT_SPOOL_DIR": str(tmp_path / name / "spool"),
        }
        instance = AiproxyProcess(
            upstream_url=fake_upstream.url, log_path=tmp_path / name / "aiproxy.log", env=env, gunicorn=True
        )
        instances.append(instance.start())
    yield instances
    for instance in instances:
        instance.__exit__(None, None, None)


def limited_key(**limits) -> str:
    policy = Policy.objects.create(name=f"limited-{uuid.uuid4().hex[:6]}", **limits)
    return api_key_create(name="limited-app", policy=policy)[1]


async def hammer(instances, key: str, run: str, count: int, *, concurrency: int, body: dict) -> list[httpx.Response]:
    """`count` requests at `concurrency`, alternating between the instances."""
    gate = asyncio.Semaphore(concurrency)
    clients = [httpx.AsyncClient(base_url=i.url, timeout=60) for i in instances]

    async def one(n: int) -> httpx.Response:
        async with gate:
            return await clients[n % len(clients)].post(
                "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}", "X-Request-ID": f"{run}-{n}"},
            )

    try:
        return await asyncio.gather(*(one(n) for n in range(count)))
    finally:
        for client in clients:
            await client.aclose()


def records(run: str, expected: int) -> dict[str, int]:
    deadline = time.monotonic() + 30
    while AuditRecord.objects.filter(request_id__startswith=run).count() < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    found = AuditRecord.objects.filter(request_id__startswith=run)
    return {outcome: found.filter(outcome=outcome).count() for outcome in ("ok", "rate_limited")}


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}


def test_60_requests_per_minute_through_two_instances_at_concurrency_20(two_instances):
    key = limited_key(rpm_limit=60)
    run = f"rpm-{uuid.uuid4().hex[:8]}"

    responses = asyncio.run(hammer(two_instances, key, run, 100, concurrency=20, body=CHAT))

    answered = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert (len(answered), len(refused)) == (60, 40)
    for response in refused:
        error = response.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert error["type"] == "requests"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.headers["x-ratelimit-limit-requests"] == "60"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in answered)
    assert remaining == list(range(60)), "each admitted request saw the shared count, once"
    assert records(run, 100) == {"ok": 60, "rate_limited": 40}


def test_three_concurrent_slow_streams_through_two_instances(two_instances):
    key = limited_key(max_parallel_requests=3)
    run = f"par-{uuid.uuid4().hex[:8]}"
    body = {**CHAT, "stream": True}

    async def scenario():
        slow = {"x-fake-chunks": '["a", "b", "c", "d"]', "x-fake-interval": "0.5"}
        clients = [httpx.AsyncClient(base_url=i.url, timeout=60) for i in two_instances]
        headers = {"Authorization": f"Bearer {key}"}
        try:
            streams = [
                asyncio.create_task(
                    clients[n % 2].post(
                        "/v1/chat/completions", json=body, headers={**headers, **slow, "X-Request-ID": f"{run}-s{n}"}
                    )
                )
                for n in range(3)
            ]
            await asyncio.sleep(0.6)  # all three are streaming now
            during = await asyncio.gather(
                *(
                    clients[n % 2].post(
                        "/v1/chat/completions", json=body, headers={**headers, "X-Request-ID": f"{run}-d{n}"}
                    )
                    for n in range(6)
                )
            )
            done = await asyncio.gather(*streams)
            await asyncio.sleep(0.3)  # a slot is released just after its stream's last byte
            after = await clients[1].post(
                "/v1/chat/completions", json=body, headers={**headers, "X-Request-ID": f"{run}-after"}
            )
            return done, during, after
        finally:
            for client in clients:
                await client.aclose()

    done, during, after = asyncio.run(scenario())

    assert [r.status_code for r in done] == [200, 200, 200]
    assert all("data: [DONE]" in r.text for r in done)
    assert [r.status_code for r in during] == [429] * 6
    assert {r.json()["error"]["code"] for r in during} == {"rate_limit_exceeded"}
    assert after.status_code == 200, "slots are released when their streams end"
    assert records(run, 10) == {"ok": 4, "rate_limited": 6}


def test_a_token_limit_with_streamed_answers_settles_on_the_real_usage(two_instances):
    # The fake counts words: "Hello" is 1 prompt token, its 4-word answer 4 completion tokens: 5 per request.
    # Each reserves more (2 for its prompt's 5 characters, plus max_tokens=10) and settles to 5 when its
    # stream ends.
    key = limited_key(tpm_limit=60)
    run = f"tpm-{uuid.uuid4().hex[:8]}"
    body = {**CHAT, "stream": True, "max_tokens": 10}

    async def one_at_a_time():
        out = []
        for n in range(14):
            out += await hammer(two_instances[n % 2 :], key, f"{run}-{n}", 1, concurrency=1, body=body)
            await asyncio.sleep(0.2)  # a stream settles just after its last byte: let it land before the next
        return out

    responses = asyncio.run(one_at_a_time())

    statuses = [r.status_code for r in responses]
    # After 10 requests of 5 tokens, the 11th would reserve 12 more: 62 > 60, refused.
    assert statuses == [200] * 10 + [429] * 4
    refused = responses[-1]
    assert refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-limit-tokens"] == "60"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "10", "50 used: too few left for the next 12"
    # The client did not ask for usage: the event aiproxy asked for is kept from it, and recorded.
    assert all('"usage"' not in r.text.replace('"usage":null', "") for r in responses[:10])
    found = AuditRecord.objects.filter(request_id__startswith=run, outcome="ok")
    assert records(run, 14) == {"ok": 10, "rate_limited": 4}
    assert sorted(found.values_list("total_tokens", flat=True)) == [5] * 10
