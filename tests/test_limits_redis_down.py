"""Redis away (a TCP relay cut): failing open keeps serving with /ready degraded; failing closed answers 503.

Never a 500, never a stall: a Redis that does not answer within REDIS_TIMEOUT counts as down.
"""

import socket
import time
import uuid

import httpx
import pytest

from policies.keys import api_key_create
from policies.models import Policy
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}
# Far above REDIS_TIMEOUT (0.25 s) and far below a stall: what "no request slower than the timeout" needs.
SLOW = 2.0


@pytest.fixture
def redis_line(settings):
    with TcpRelay("127.0.0.1", 6379) as relay:
        settings.REDIS_URL = f"redis://127.0.0.1:{relay.port}/0"
        settings.REDIS_KEY_PREFIX = f"aiproxy-test-{uuid.uuid4().hex[:8]}:"
        yield relay


def limited_key() -> str:
    policy = Policy.objects.create(name=f"limited-{uuid.uuid4().hex[:6]}", rpm_limit=1000)
    return api_key_create(name="limited-app", policy=policy)[1]


def timed_chat(live, key: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(
        live.url + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return response, time.monotonic() - started


def test_failing_open_serves_and_says_degraded(live, redis_line, settings):
    key = limited_key()
    assert timed_chat(live, key)[0].status_code == 200
    assert httpx.get(live.url + "/ready").json()["limits"] == "redis"

    redis_line.cut()
    answers = [timed_chat(live, key) for _ in range(5)]

    assert [response.status_code for response, _ in answers] == [200] * 5
    assert max(seconds for _, seconds in answers) < SLOW
    # Still limited, by this process's own counters.
    assert answers[-1][0].headers["x-ratelimit-limit-requests"] == "1000"
    ready = httpx.get(live.url + "/ready", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["problems"] == {"limits": "redis unreachable"}

    redis_line.restore()
    deadline = time.monotonic() + 10
    while httpx.get(live.url + "/ready").json()["status"] != "ready":
        assert time.monotonic() < deadline, "the limiter finds Redis again by itself"
        time.sleep(0.2)


def test_failing_closed_answers_503_fast(live, redis_line, settings):
    settings.RATE_LIMIT_REDIS_FAILURE = "closed"
    key = limited_key()
    assert timed_chat(live, key)[0].status_code == 200

    redis_line.cut()
    answers = [timed_chat(live, key) for _ in range(5)]

    assert [response.status_code for response, _ in answers] == [503] * 5
    assert {response.json()["error"]["code"] for response, _ in answers} == {"limits_unavailable"}
    assert max(seconds for _, seconds in answers) < SLOW
    ready = httpx.get(live.url + "/ready", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["problems"]["limits"] == "redis unreachable"
    redis_line.restore()


def test_a_key_without_limits_never_waits_for_redis(live, alice_key, redis_line, settings):
    settings.RATE_LIMIT_REDIS_FAILURE = "closed"
    redis_line.cut()

    response, seconds = timed_chat(live, alice_key)

    assert response.status_code == 200
    assert seconds < SLOW
    redis_line.restore()


@pytest.fixture
def silent_redis(settings):
    """Accepts connections and never answers: a Redis that hangs, not one that is gone."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    settings.REDIS_URL = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    settings.REDIS_KEY_PREFIX = f"aiproxy-test-{uuid.uuid4().hex[:8]}:"
    yield server
    server.close()


def test_a_redis_that_does_not_answer_counts_as_down_within_its_timeout(live, silent_redis, settings):
    key = limited_key()

    answers = [timed_chat(live, key) for _ in range(3)]

    assert [response.status_code for response, _ in answers] == [200] * 3
    assert max(seconds for _, seconds in answers) < SLOW
    assert httpx.get(live.url + "/ready", timeout=5).json()["status"] == "degraded"
