"""The official OpenAI SDK against a limited key: its RateLimitError, and its own retry honouring Retry-After."""

import threading
import time
import uuid

import httpx
import openai
import pytest

from policies.keys import api_key_create
from policies.models import Policy
from proxy.models import AuditRecord
from tests.records import wait_for_record

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def one_at_a_time_key(settings):
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.REDIS_KEY_PREFIX = f"aiproxy-test-{uuid.uuid4().hex[:8]}:"
    policy = Policy.objects.create(name="one-at-a-time", max_parallel_requests=1, rpm_limit=100)
    return api_key_create(name="serial-app", policy=policy)[1]


def hold_the_slot(live, key: str, seconds: float) -> threading.Thread:
    """A slow stream on the key's only slot, in the background."""
    chunks = '["a", "b", "c", "d"]'

    def stream():
        httpx.post(
            live.url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {key}", "x-fake-chunks": chunks, "x-fake-interval": str(seconds / 4)},
            timeout=30,
        )

    thread = threading.Thread(target=stream)
    thread.start()
    time.sleep(0.3)  # the stream holds the slot now
    return thread


def test_the_sdk_raises_its_rate_limit_error(live, one_at_a_time_key):
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=one_at_a_time_key, max_retries=0)
    holder = hold_the_slot(live, one_at_a_time_key, seconds=2)

    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    holder.join()
    error = raised.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["x-ratelimit-limit-requests"] == "100"
    record = wait_for_record(error.response.headers["x-request-id"])
    assert record.outcome == "rate_limited"


def test_the_sdk_retries_after_retry_after_and_gets_its_answer(live, one_at_a_time_key, fake_upstream):
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=one_at_a_time_key, max_retries=3)
    holder = hold_the_slot(live, one_at_a_time_key, seconds=1.2)

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)

    holder.join()
    assert raw.parse().choices[0].message.content == "Hello from fake upstream"
    # Refused while the stream held the slot, then answered: the SDK waited as Retry-After said.
    assert raw.retries_taken >= 1
    assert int(raw.headers["x-ratelimit-remaining-requests"]) < 100
    wait_for_record(raw.headers["x-request-id"])
    assert AuditRecord.objects.filter(outcome="rate_limited").count() == raw.retries_taken
