"""The rules of a key's limits, held by both of proxy.limiter's implementations alike.

Each rule runs on LocalCounters (one process, pure Python, its clock time.time()) and on the Redis scripts
RESERVE/SETTLE (shared, atomic, their clock Redis's TIME), so the two provably agree; only the rules that need
the clock moved run on the local counters alone, and a lease running out (Redis's alone) on Redis alone:

- rpm and tpm count what was admitted in the last 60 whole seconds (one-second buckets, a sliding window);
  a request that would cross a limit is refused with retry_after, the seconds until enough old buckets leave.
- An estimate of tokens larger than the tpm limit is clamped to the limit (else the request could never pass).
- A refused request reserves nothing. Settlement replaces the estimate by the actual tokens, in its bucket.
- Concurrency: the (N+1)th request in flight is refused; a settlement frees its slot, and so does (in Redis)
  a lease that ran out, a dead worker's.
- Budgets in nano-dollars per UTC day and month: refused when spent + estimated cost would cross the budget,
  retry_after the seconds until the period ends; settlement moves the spend by (actual - estimated).

The local clock is frozen and moved by the tests; Redis's clock is not moved: its tests run within one of its
seconds, and earlier traffic is written into the windows' buckets as the script itself writes it.
"""

import dataclasses
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis

import proxy.limiter
from policies.limits import Limits, nanos_to_usd
from proxy.limiter import (
    RESERVE,
    SETTLE,
    LocalCounters,
    Reservation,
    Verdict,
    periods,
    redis_keys,
    reserve_call,
    settle_call,
    verdict_from,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
KEY_ID = 7
# 2025-03-10 12:00:58 UTC: two seconds before a minute turns.
START = datetime(2025, 3, 10, 12, 0, 58, tzinfo=UTC).timestamp()


@dataclass
class Reserved:
    """A verdict (its fields read through), and the reservation Limiter.reserve keeps for the settlement."""

    verdict: Verdict
    reservation: Reservation

    def __getattr__(self, name):
        return getattr(self.verdict, name)


class Clock:
    """Stands in for the time module in proxy.limiter: the local counters' clock, moved by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Local:
    """LocalCounters, driven the way Limiter.reserve and Limiter.settle drive it."""

    name = "local"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.counters = LocalCounters()

    def within_one_second(self) -> int:
        """The second the rest of the test runs in (the clock stands still unless moved)."""
        return int(self.clock.time())

    def next_second(self) -> None:
        self.clock.advance(1)

    def wall_clock(self) -> datetime:
        return datetime.fromtimestamp(self.clock.time(), UTC)

    def reserve(self, limits: Limits, tokens: int = 0, nanos: int = 0, day: str | None = None) -> Reserved:
        today, month, day_left, month_left = periods(self.wall_clock())
        day = day or today
        member = uuid.uuid4().hex
        verdict = self.counters.reserve(KEY_ID, limits, tokens, nanos, member, day, month, day_left, month_left)
        return Reserved(verdict, reservation_for(verdict, limits, nanos, member, day, month, local=True))

    def settle(self, reservation: Reservation, tokens: int, nanos: int) -> None:
        self.counters.settle(reservation, tokens, nanos)

    # What earlier traffic left behind, and what the store holds now.

    def admitted_earlier(self, seconds_ago: int, requests: int = 0, tokens: int = 0) -> None:
        second = self.within_one_second() - seconds_ago
        if requests:
            self.counters.requests.setdefault(KEY_ID, {})[second] = requests
        if tokens:
            self.counters.tokens.setdefault(KEY_ID, {})[second] = tokens

    def requests_counted(self) -> int:
        return sum(self.counters.requests.get(KEY_ID, {}).values())

    def tokens_by_second(self) -> dict[int, int]:
        return {second: n for second, n in self.counters.tokens.get(KEY_ID, {}).items() if n}

    def in_flight(self) -> int:
        return len(self.counters.in_flight.get(KEY_ID, set()))

    def spent(self, period: str) -> int:
        """Nano-dollars spent in a day (YYYYMMDD) or a month (YYYYMM)."""
        return self.counters.spend.get(f"{KEY_ID}:{period}", 0)


class Shared:
    """The Redis scripts, sent the keys and ARGV that the limiter builds (reserve_call, settle_call)."""

    name = "redis"

    def __init__(self, client: redis.Redis, lease_ms: int = 30_000) -> None:
        self.client = client
        self.lease_ms = lease_ms
        self.reserve_script = client.register_script(RESERVE)
        self.settle_script = client.register_script(SETTLE)
        self._second: int | None = None

    def within_one_second(self) -> int:
        """Redis's second the rest of the test runs in: the first time, waits for a fresh one to begin.

        Every reservation after it checks that the script saw that second still."""
        if self._second is None:
            seconds, micros = self.client.time()
            if micros > 200_000:
                time.sleep((1_000_000 - micros) / 1_000_000 + 0.005)
                seconds, micros = self.client.time()
            self._second = seconds
        return self._second

    def next_second(self) -> None:
        start = self.client.time()[0]
        while self.client.time()[0] == start:
            time.sleep(0.01)
        self._second = None

    def wall_clock(self) -> datetime:
        return datetime.now(UTC)

    def keys(self, day: str = "", month: str = "") -> list[str]:
        return redis_keys(KEY_ID, day, month)

    def reserve(self, limits: Limits, tokens: int = 0, nanos: int = 0, day: str | None = None) -> Reserved:
        today, month, day_left, month_left = periods(self.wall_clock())
        day = day or today
        member = uuid.uuid4().hex
        keys, args = reserve_call(KEY_ID, limits, tokens, nanos, member, (day, month, day_left, month_left), [])
        args[8] = self.lease_ms
        verdict = verdict_from(self.reserve_script(keys=keys, args=args))
        if self._second is not None:
            assert verdict.bucket == self._second, "the test outlasted Redis's second: run it again"
        reservation = reservation_for(verdict, limits, nanos, member, day, month, local=False)
        reservation.day_ttl, reservation.month_ttl = day_left + 86400, month_left + 86400
        return Reserved(verdict, reservation)

    def settle(self, reservation: Reservation, tokens: int, nanos: int) -> None:
        keys, args = settle_call([(reservation, tokens, nanos)])
        self.settle_script(keys=keys, args=args)

    def admitted_earlier(self, seconds_ago: int, requests: int = 0, tokens: int = 0) -> None:
        second = self.within_one_second() - seconds_ago
        requests_key, tokens_key = self.keys()[:2]
        if requests:
            self.client.hset(requests_key, str(second), requests)
        if tokens:
            self.client.hset(tokens_key, str(second), tokens)

    def requests_counted(self) -> int:
        return sum(int(n) for n in self.client.hvals(self.keys()[0]))

    def tokens_by_second(self) -> dict[int, int]:
        counts = self.client.hgetall(self.keys()[1])
        return {int(second): int(n) for second, n in counts.items() if int(n)}

    def in_flight(self) -> int:
        return self.client.zcard(self.keys()[2])

    def spent(self, period: str) -> int:
        """Nano-dollars spent in a day (YYYYMMDD) or a month (YYYYMM)."""
        day_key, month_key = self.keys(period, period)[3:]
        return int(self.client.get(day_key if len(period) == 8 else month_key) or 0)


def reservation_for(verdict: Verdict, limits: Limits, nanos: int, member: str, day: str, month: str, local: bool):
    """What Limiter.reserve keeps of a reservation, for its settlement."""
    return Reservation(
        key_id=KEY_ID,
        member=member,
        limits=limits,
        reserved_tokens=verdict.reserved_tokens,
        reserved_nanos=nanos,
        bucket=verdict.bucket,
        day=day,
        month=month,
        local=local,
    )


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock(START)
    monkeypatch.setattr(proxy.limiter, "time", clock)
    return clock


@pytest.fixture
def redis_client(settings):
    settings.REDIS_KEY_PREFIX = f"aiproxy-test-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    ours = list(client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}*"))
    if ours:
        client.delete(*ours)
    client.close()


@pytest.fixture(params=["local", "redis"])
def counters(request) -> Local | Shared:
    if request.param == "local":
        return Local(request.getfixturevalue("clock"))
    return Shared(request.getfixturevalue("redis_client"))


@pytest.fixture
def local(clock) -> Local:
    return Local(clock)


def seconds_left(now: datetime, period: str) -> float:
    """Seconds from now until the UTC day or month ends."""
    if period == "day":
        end = now + timedelta(days=1)
    else:
        end = now.replace(day=28) + timedelta(days=4)
        end = end.replace(day=1)
    return (end.replace(hour=0, minute=0, second=0, microsecond=0) - now).total_seconds()


# --- requests per minute ----------------------------------------------------------------------------------


def test_rpm_admits_exactly_the_limit_then_refuses_until_the_window_frees_one(counters):
    limits = Limits(rpm_limit=3)
    counters.within_one_second()

    admitted = [counters.reserve(limits) for _ in range(3)]
    refused = counters.reserve(limits)

    assert [v.refused for v in admitted] == [None, None, None]
    assert [v.requests_used for v in admitted] == [1, 2, 3]
    assert refused.refused == "rpm"
    assert refused.requests_used == 3
    # All three were admitted in this second: the window frees one when this second leaves it.
    assert refused.retry_after == 60
    assert refused.requests_reset == 60


def test_a_request_refused_by_rpm_reserves_nothing(counters):
    limits = Limits(rpm_limit=2, tpm_limit=1000, max_parallel_requests=10, daily_budget_usd=Decimal(1))
    first = counters.reserve(limits, tokens=10, nanos=100)
    counters.reserve(limits, tokens=10, nanos=100)
    day = first.reservation.day

    refusals = [counters.reserve(limits, tokens=10, nanos=100) for _ in range(3)]

    assert {v.refused for v in refusals} == {"rpm"}
    assert [v.requests_used for v in refusals] == [2, 2, 2]
    assert counters.requests_counted() == 2
    assert sum(counters.tokens_by_second().values()) == 20
    assert counters.in_flight() == 2
    assert counters.spent(day) == 200


def test_a_request_refused_by_a_later_limit_is_not_counted_by_an_earlier_one(counters):
    limits = Limits(rpm_limit=5, tpm_limit=100)
    counters.reserve(limits, tokens=90)

    refused = counters.reserve(limits, tokens=20)
    admitted = counters.reserve(limits, tokens=10)

    assert refused.refused == "tpm"
    assert admitted.refused is None
    assert admitted.requests_used == 2
    assert counters.requests_counted() == 2


def test_a_request_admitted_59_seconds_ago_still_counts(counters):
    counters.admitted_earlier(seconds_ago=59, requests=3)

    verdict = counters.reserve(Limits(rpm_limit=3))

    assert verdict.refused == "rpm"
    assert verdict.requests_used == 3
    assert verdict.retry_after == 1


def test_a_request_admitted_60_seconds_ago_has_left_the_window(counters):
    counters.admitted_earlier(seconds_ago=60, requests=3)

    verdict = counters.reserve(Limits(rpm_limit=3))

    assert verdict.refused is None
    assert verdict.requests_used == 1
    assert counters.requests_counted() == 1  # the stale bucket is gone


def test_retry_after_is_when_the_oldest_request_leaves_the_window(counters):
    counters.admitted_earlier(seconds_ago=50, requests=1)
    counters.admitted_earlier(seconds_ago=20, requests=2)

    verdict = counters.reserve(Limits(rpm_limit=3))

    assert verdict.refused == "rpm"
    assert verdict.retry_after == 10
    assert verdict.requests_reset == 10


def test_an_admitted_request_reports_when_the_oldest_in_the_window_leaves(counters):
    counters.admitted_earlier(seconds_ago=45, requests=1)

    verdict = counters.reserve(Limits(rpm_limit=3))

    assert verdict.refused is None
    assert verdict.requests_used == 2
    assert verdict.requests_reset == 15


def test_a_minute_turning_gives_no_fresh_allowance(local, clock):
    limits = Limits(rpm_limit=3)
    for _ in range(3):
        assert local.reserve(limits).refused is None  # at 12:00:58

    clock.advance(3)  # 12:01:01: a fixed window would start over here
    verdict = local.reserve(limits)

    assert verdict.refused == "rpm"
    assert verdict.retry_after == 57


def test_a_minute_after_the_last_request_everything_is_free_again(local, clock):
    limits = Limits(rpm_limit=2, tpm_limit=100)
    local.reserve(limits, tokens=60)
    clock.advance(30)
    local.reserve(limits, tokens=40)

    clock.advance(29)
    assert local.reserve(limits, tokens=1).refused == "rpm"  # the first leaves the window only at 60 s
    clock.advance(1)
    assert local.reserve(limits, tokens=60).refused is None
    clock.advance(30)
    assert local.reserve(limits, tokens=60).refused == "tpm"
    clock.advance(31)
    verdict = local.reserve(limits, tokens=100)

    assert verdict.refused is None
    assert (verdict.requests_used, verdict.tokens_used) == (1, 100)


# --- tokens per minute ------------------------------------------------------------------------------------


def test_tpm_refuses_when_used_plus_the_estimate_would_exceed_the_limit(counters):
    limits = Limits(tpm_limit=100)
    counters.within_one_second()

    first = counters.reserve(limits, tokens=60)
    refused = counters.reserve(limits, tokens=41)
    to_the_limit = counters.reserve(limits, tokens=40)

    assert (first.refused, first.tokens_used) == (None, 60)
    assert (refused.refused, refused.tokens_used, refused.retry_after) == ("tpm", 60, 60)
    assert (to_the_limit.refused, to_the_limit.tokens_used) == (None, 100)


def test_tpm_retry_after_waits_for_enough_tokens_to_leave_not_just_the_oldest(counters):
    counters.admitted_earlier(seconds_ago=50, tokens=30)
    counters.admitted_earlier(seconds_ago=30, tokens=40)
    counters.admitted_earlier(seconds_ago=10, tokens=30)

    verdict = counters.reserve(Limits(tpm_limit=100), tokens=50)

    # 50 must leave: the 30 of 50 s ago are not enough, with the 40 of 30 s ago they are.
    assert verdict.refused == "tpm"
    assert verdict.tokens_used == 100
    assert verdict.retry_after == 30
    assert verdict.tokens_reset == 10


def test_an_estimate_larger_than_the_tpm_limit_is_clamped_to_the_limit(counters):
    limits = Limits(tpm_limit=100)

    verdict = counters.reserve(limits, tokens=500)

    assert verdict.refused is None
    assert verdict.reserved_tokens == 100
    assert verdict.tokens_used == 100
    assert counters.reserve(limits, tokens=1).refused == "tpm"


def test_an_estimate_larger_than_the_limit_waits_for_an_empty_window_not_forever(counters):
    counters.admitted_earlier(seconds_ago=40, tokens=1)

    verdict = counters.reserve(Limits(tpm_limit=100), tokens=10_000)

    assert verdict.refused == "tpm"
    assert verdict.retry_after == 20


def test_settlement_replaces_the_estimate_by_the_actual_tokens_in_the_bucket_it_reserved(counters):
    limits = Limits(tpm_limit=1000)
    counters.within_one_second()
    smaller = counters.reserve(limits, tokens=300)
    larger = counters.reserve(limits, tokens=100)
    reserved_in = smaller.bucket

    counters.next_second()  # the exchanges end in a later second than they began
    counters.settle(smaller.reservation, tokens=120, nanos=0)
    counters.settle(larger.reservation, tokens=250, nanos=0)

    assert counters.tokens_by_second() == {reserved_in: 370}
    assert counters.reserve(limits, tokens=630).refused is None
    assert counters.reserve(limits, tokens=1).refused == "tpm"


def test_settlement_of_a_clamped_estimate_replaces_only_what_was_reserved(counters):
    limits = Limits(tpm_limit=100)
    verdict = counters.reserve(limits, tokens=500)

    counters.settle(verdict.reservation, tokens=30, nanos=0)

    assert sum(counters.tokens_by_second().values()) == 30


def test_a_settlement_arriving_after_its_bucket_left_the_window_counts_the_actual_tokens_now(counters):
    limits = Limits(tpm_limit=1000)
    verdict = counters.reserve(limits, tokens=10)
    long_ago = dataclasses.replace(verdict.reservation, bucket=verdict.bucket - 100)

    counters.settle(long_ago, tokens=75, nanos=0)

    tokens = counters.tokens_by_second()
    assert verdict.bucket - 100 not in tokens
    assert sum(tokens.values()) == 85
    assert max(tokens) >= verdict.bucket


# --- concurrency ------------------------------------------------------------------------------------------


def test_concurrency_refuses_one_more_than_the_limit_and_a_settlement_frees_a_slot(counters):
    limits = Limits(max_parallel_requests=2)
    first = counters.reserve(limits)
    second = counters.reserve(limits)

    refused = counters.reserve(limits)
    counters.settle(first.reservation, tokens=0, nanos=0)
    again = counters.reserve(limits)

    assert (first.refused, second.refused) == (None, None)
    assert (refused.refused, refused.retry_after) == ("parallel", 1)
    assert again.refused is None
    assert counters.in_flight() == 2
    assert counters.reserve(limits).refused == "parallel"


def test_a_settlement_frees_only_its_own_slot(counters):
    limits = Limits(max_parallel_requests=3)
    first = counters.reserve(limits)
    counters.reserve(limits)

    counters.settle(first.reservation, tokens=0, nanos=0)
    counters.settle(first.reservation, tokens=0, nanos=0)  # twice: still one slot

    assert counters.in_flight() == 1


def test_in_redis_a_lease_that_runs_out_frees_its_slot(redis_client):
    shared = Shared(redis_client, lease_ms=50)
    limits = Limits(max_parallel_requests=1)
    assert shared.reserve(limits).refused is None
    assert shared.reserve(limits).refused == "parallel"

    time.sleep(0.15)  # the worker that held the slot died: nobody renews its lease
    verdict = shared.reserve(limits)

    assert verdict.refused is None
    assert shared.in_flight() == 1


# --- budgets ----------------------------------------------------------------------------------------------


def test_the_daily_budget_refuses_what_would_cross_it_until_the_utc_day_ends(counters):
    limits = Limits(daily_budget_usd=Decimal("1.00"))
    first = counters.reserve(limits, nanos=600_000_000)

    before = counters.wall_clock()
    refused = counters.reserve(limits, nanos=400_000_001)
    after = counters.wall_clock()
    to_the_budget = counters.reserve(limits, nanos=400_000_000)

    assert first.refused is None
    assert refused.refused == "daily_budget"
    # Retried then, the request lands in the next UTC day (within a second of its start).
    assert seconds_left(after, "day") < refused.retry_after <= seconds_left(before, "day") + 1
    assert to_the_budget.refused is None
    assert counters.spent(first.reservation.day) == 1_000_000_000


def test_the_monthly_budget_refuses_what_would_cross_it_until_the_utc_month_ends(counters):
    limits = Limits(monthly_budget_usd=Decimal("5"))
    first = counters.reserve(limits, nanos=4_000_000_000)

    before = counters.wall_clock()
    refused = counters.reserve(limits, nanos=1_000_000_001)
    after = counters.wall_clock()

    assert first.refused is None
    assert refused.refused == "monthly_budget"
    assert seconds_left(after, "month") < refused.retry_after <= seconds_left(before, "month") + 1
    assert counters.spent(first.reservation.month) == 4_000_000_000


def test_a_request_refused_by_the_budget_spends_nothing(counters):
    limits = Limits(daily_budget_usd=Decimal("0.000001"), max_parallel_requests=5)
    first = counters.reserve(limits, nanos=800)

    refusals = [counters.reserve(limits, nanos=300) for _ in range(3)]

    assert {v.refused for v in refusals} == {"daily_budget"}
    assert counters.spent(first.reservation.day) == 800
    assert counters.in_flight() == 1


def test_settlement_moves_the_spend_by_actual_minus_estimated_cost(counters):
    limits = Limits(daily_budget_usd=Decimal("1"), monthly_budget_usd=Decimal("10"))
    overestimated = counters.reserve(limits, nanos=500_000_000)
    underestimated = counters.reserve(limits, nanos=100_000_000)
    day, month = overestimated.reservation.day, overestimated.reservation.month

    counters.settle(overestimated.reservation, tokens=0, nanos=200_000_000)
    counters.settle(underestimated.reservation, tokens=0, nanos=150_000_000)

    assert counters.spent(day) == 350_000_000
    assert counters.spent(month) == 350_000_000
    assert counters.reserve(limits, nanos=650_000_000).refused is None
    assert counters.reserve(limits, nanos=1).refused == "daily_budget"


def test_a_new_utc_day_starts_a_new_daily_budget(counters):
    limits = Limits(daily_budget_usd=Decimal("1"))
    assert counters.reserve(limits, nanos=1_000_000_000, day="20250310").refused is None
    assert counters.reserve(limits, nanos=1, day="20250310").refused == "daily_budget"

    verdict = counters.reserve(limits, nanos=1_000_000_000, day="20250311")

    assert verdict.refused is None
    assert counters.spent("20250311") == 1_000_000_000


def test_the_budget_is_counted_in_whole_nano_dollars(counters):
    limits = Limits(daily_budget_usd=nanos_to_usd(7))  # seven nano-dollars

    verdicts = [counters.reserve(limits, nanos=1) for _ in range(8)]

    assert [v.refused for v in verdicts] == [None] * 7 + ["daily_budget"]
    assert counters.reserve(limits, nanos=0).refused is None  # what costs nothing crosses nothing


# --- which limit refuses, and no limit ------------------------------------------------------------------


def test_limits_are_checked_in_order_rpm_tpm_concurrency_then_budgets(counters):
    limits = Limits(
        rpm_limit=1,
        tpm_limit=10,
        max_parallel_requests=1,
        daily_budget_usd=nanos_to_usd(10),
        monthly_budget_usd=nanos_to_usd(10),
    )
    assert counters.reserve(limits, tokens=10, nanos=10).refused is None

    assert counters.reserve(limits, tokens=10, nanos=10).refused == "rpm"
    no_rpm = dataclasses.replace(limits, rpm_limit=None)
    assert counters.reserve(no_rpm, tokens=10, nanos=10).refused == "tpm"
    no_rates = Limits(max_parallel_requests=1, daily_budget_usd=nanos_to_usd(10), monthly_budget_usd=nanos_to_usd(10))
    assert counters.reserve(no_rates, nanos=10).refused == "parallel"
    budgets = Limits(daily_budget_usd=nanos_to_usd(10), monthly_budget_usd=nanos_to_usd(10))
    assert counters.reserve(budgets, nanos=10).refused == "daily_budget"
    assert counters.reserve(Limits(monthly_budget_usd=nanos_to_usd(10)), nanos=10).refused == "monthly_budget"


def test_no_limit_of_a_kind_is_no_check_of_that_kind(counters):
    verdicts = [counters.reserve(Limits(), tokens=10**9, nanos=10**12) for _ in range(50)]

    assert {v.refused for v in verdicts} == {None}


def test_the_utc_day_and_month_and_the_seconds_until_each_ends():
    assert periods(datetime(2025, 3, 10, 23, 59, 30, tzinfo=UTC)) == ("20250310", "202503", 31, 21 * 86400 + 31)
    assert periods(datetime(2025, 2, 28, 12, 0, 0, tzinfo=UTC)) == ("20250228", "202502", 43201, 43201)
    assert periods(datetime(2025, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)) == ("20251231", "202512", 1, 1)
