"""Every record is priced, and a key's daily budget holds to the nano-dollar: Redis's count is the records' sum."""

import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
import redis
from asgiref.sync import async_to_sync
from django.db.models import Sum

from policies.cache import config_cache
from policies.keys import api_key_create, key_issue
from policies.models import ModelPrice, Policy
from proxy.models import AuditRecord
from tests.records import wait_for_record

pytestmark = pytest.mark.django_db(transaction=True)

REDIS_URL = "redis://127.0.0.1:6379/0"
# $1,000 per million tokens: one token costs a tenth of a cent, so the sums are easy to read.
RATE = Decimal("1000")


@pytest.fixture
def shared_limits(settings):
    settings.REDIS_URL = REDIS_URL
    settings.REDIS_KEY_PREFIX = f"aiproxy-test-{uuid.uuid4().hex[:8]}:"
    return settings


@pytest.fixture
def priced_gpt_4o():
    ModelPrice.objects.update_or_create(
        pattern="gpt-4o",
        defaults={"input_per_million": RATE, "cached_input_per_million": RATE / 2, "output_per_million": RATE},
    )
    async_to_sync(config_cache.check_for_changes)()  # the server's cache sees the new price now, not in a second


def chat(live, key: str, *, model: str = "gpt-4o") -> httpx.Response:
    return httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 10},
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": f"spend-{uuid.uuid4().hex[:10]}"},
        timeout=10,
    )


def test_each_record_has_its_cost_and_the_price_it_used(live, alice_key, priced_gpt_4o):
    response = chat(live, alice_key)

    record = wait_for_record(response.headers["x-request-id"])
    # 1 prompt + 4 completion tokens at $1,000 per million.
    assert record.cost_usd == Decimal("0.005")
    assert record.cost_status == "priced"
    assert record.price["pattern"] == "gpt-4o"
    assert Decimal(record.price["output_per_million"]) == RATE


def test_a_model_without_a_price_costs_nothing_and_says_so(live, alice_key, priced_gpt_4o):
    response = chat(live, alice_key, model="mystery-model")

    record = wait_for_record(response.headers["x-request-id"])
    assert record.cost_usd == Decimal(0)
    assert record.cost_status == "unknown_price"
    assert record.price is None


def test_a_request_that_would_cross_the_daily_budget_gets_insufficient_quota(live, shared_limits, priced_gpt_4o):
    policy = Policy.objects.create(name="budgeted", daily_budget_usd=Decimal("0.05"))
    api_key, key = api_key_create(name="budgeted-app", policy=policy)

    statuses, last = [], None
    for _ in range(10):
        last = chat(live, key)
        statuses.append(last.status_code)
        time.sleep(0.05)  # a request settles as its answer goes out: let that land before the next reserves

    # Each costs $0.005 and reserves $0.012 (2 prompt + 10 max_tokens, at the output rate) until it settles:
    # after 8 ($0.040) the 9th would cross $0.05.
    assert statuses == [200] * 8 + [429] * 2
    error = last.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert int(last.headers["retry-after"]) <= 86400
    wait_for_record(last.headers["x-request-id"])
    records = AuditRecord.objects.filter(api_key_id=api_key.pk)
    assert records.filter(outcome="rate_limited").count() == 2
    spent = records.aggregate(total=Sum("cost_usd"))["total"]
    assert spent == Decimal("0.040")
    day = datetime.now(UTC).strftime("%Y%m%d")
    counted = redis.Redis.from_url(REDIS_URL).get(f"{shared_limits.REDIS_KEY_PREFIX}{{{api_key.pk}}}:sd:{day}")
    assert int(counted) == spent * 10**9, "the budget's count is the records' sum, to the nano-dollar"


def test_a_regenerated_secret_keeps_the_keys_counts(live, shared_limits):
    """The limit belongs to the key's identity, not to its secret: a new secret is not a fresh allowance."""
    policy = Policy.objects.create(name="three-a-minute", rpm_limit=3)
    api_key, old_secret = api_key_create(name="rotating-app", policy=policy)
    assert [chat(live, old_secret).status_code for _ in range(2)] == [200, 200]

    new_secret = key_issue(api_key)
    api_key.save()
    async_to_sync(config_cache.check_for_changes)()

    assert chat(live, old_secret).status_code == 401
    assert [chat(live, new_secret).status_code for _ in range(2)] == [200, 429]


def test_a_stream_cut_before_its_usage_is_priced_on_an_estimate(live, alice_key, priced_gpt_4o):
    response = httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello there"}], "stream": True},
        headers={"Authorization": f"Bearer {alice_key}", "x-fake-cut-after": "3"},
        timeout=10,
    )

    record = wait_for_record(response.headers["x-request-id"])
    assert record.outcome == "upstream_cut"
    assert record.cost_status == "estimated"
    # "Hello there" (11 characters: 3 tokens) and what arrived of the answer before the cut (a few words:
    # 4 characters a token), at $0.001 a token.
    assert Decimal("0.004") <= record.cost_usd <= Decimal("0.008")
    assert record.total_tokens is None, "the tokens columns hold only what the upstream reported"
