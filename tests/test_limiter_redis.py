"""The limiter's own work around the scripts, against the real Redis: leases renewed for as long as a request
runs, settlements riding along with the next reservation, a reservation whose caller left settled anyway,
and spend keys that always expire."""

import asyncio
import uuid
from decimal import Decimal

import pytest
import redis

from policies.limits import Limits
from proxy.limiter import Limiter, redis_keys

REDIS_URL = "redis://127.0.0.1:6379/0"
KEY_ID = 7


@pytest.fixture
def shared(settings):
    settings.REDIS_URL = REDIS_URL
    settings.REDIS_KEY_PREFIX = f"aiproxy-test-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    for key in client.scan_iter(settings.REDIS_KEY_PREFIX + "*"):
        client.delete(key)


def member() -> str:
    return uuid.uuid4().hex


async def test_a_long_request_keeps_its_slot_for_many_leases(shared, settings):
    """Its worker renews the lease and the set's own lifetime: a lone long stream is never forgotten."""
    settings.LIMITS_LEASE_SECONDS = 0.05
    limiter = Limiter()
    one = Limits(max_parallel_requests=1)
    first, held = await limiter.reserve(KEY_ID, one, 0, 0, member())

    await asyncio.sleep(0.5)  # ten leases, two and a half lifetimes of the set
    second, _ = await limiter.reserve(KEY_ID, one, 0, 0, member())

    assert first.refused is None
    assert second.refused == "parallel"
    limiter.settle(held, 0, 0)
    await asyncio.sleep(0.05)
    third, _ = await limiter.reserve(KEY_ID, one, 0, 0, member())
    assert third.refused is None
    await limiter.close()


async def test_settlements_ride_along_with_the_next_reservation(shared):
    limiter = Limiter()
    one = Limits(max_parallel_requests=1)
    _, held = await limiter.reserve(KEY_ID, one, 0, 0, member())

    limiter.settle(held, 0, 0)  # queued, not yet sent
    in_flight = redis_keys(KEY_ID, "", "")[2]
    assert shared.zcard(in_flight) == 1
    verdict, _ = await limiter.reserve(KEY_ID, one, 0, 0, member())

    assert verdict.refused is None, "the release went first, in the same script"
    assert shared.zcard(in_flight) == 1
    await limiter.close()


async def test_settlements_go_alone_when_no_reservation_comes(shared):
    limiter = Limiter()
    _, held = await limiter.reserve(KEY_ID, Limits(max_parallel_requests=5), 0, 0, member())

    limiter.settle(held, 0, 0)
    await asyncio.sleep(0.1)

    assert shared.zcard(redis_keys(KEY_ID, "", "")[2]) == 0
    await limiter.close()


async def test_a_reservation_whose_caller_left_is_settled_anyway(shared):
    limiter = Limiter()
    one = Limits(max_parallel_requests=1)
    leaving = asyncio.ensure_future(limiter.reserve(KEY_ID, one, 0, 0, member()))
    await asyncio.sleep(0)  # the script is on its way
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving

    await asyncio.sleep(0.1)  # its admission came back to nobody, and was released
    verdict, _ = await limiter.reserve(KEY_ID, one, 0, 0, member())

    assert verdict.refused is None
    await limiter.close()


async def test_spend_keys_expire_even_when_only_a_settlement_wrote_them(shared):
    """An estimate of $0 (a model priced only by its dated snapshot) reserves nothing; the settlement writes."""
    limiter = Limiter()
    budget = Limits(daily_budget_usd=Decimal(1), monthly_budget_usd=Decimal(10))
    _, held = await limiter.reserve(KEY_ID, budget, 0, 0, member())

    limiter.settle(held, 10, 5)
    await asyncio.sleep(0.1)

    day_key, month_key = redis_keys(KEY_ID, held.day, held.month)[3:]
    assert int(shared.get(day_key)) == 5
    assert 86400 < shared.ttl(day_key) <= 2 * 86400
    assert shared.ttl(month_key) > 86400
    await limiter.close()


async def test_a_redis_that_forgot_the_scripts_gets_them_again(shared):
    """SCRIPT FLUSH is what a restarted Redis looks like to a worker that loaded them before."""
    limiter = Limiter()
    first, _ = await limiter.reserve(KEY_ID, Limits(rpm_limit=10), 0, 0, member())
    shared.script_flush()

    second, _ = await limiter.reserve(KEY_ID, Limits(rpm_limit=10), 0, 0, member())

    assert (first.refused, second.refused) == (None, None)
    assert (first.local, second.local) == (False, False), "counted in Redis, not fallen back to this process"
    assert second.requests_used == 2
    await limiter.close()
