"""Per-key limits held across every worker and instance: one Redis script per request, settled after it.

Windows: requests and tokens per minute count what was admitted in the last 60 whole seconds (a sliding
window of one-second buckets, by Redis's clock): never 2x at a boundary, as a fixed window would let
through. Concurrency: a set of in-flight requests, each with a lease its worker renews (a killed worker's
slots free themselves when their lease runs out). Budgets: spend per UTC day and month, in nano-dollars.

A request reserves (one round trip, all checks and increments in one Lua script, atomic); when it ends,
it settles: its token estimate is replaced by the real usage, its estimated cost by the real cost, its
slot released. Settlements are queued and sent in pipelined batches off the request path.

Without REDIS_URL the same rules run in this process only. With Redis unreachable (or slower than
REDIS_TIMEOUT), RATE_LIMIT_REDIS_FAILURE chooses: "open" serves with this process's own counters
(logged, counted, /ready degraded), "closed" answers 503. Redis is retried in the background.
"""

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from redis.exceptions import NoScriptError

from policies.limits import Limits, usd_to_nanos
from proxy.script_channel import ScriptChannel

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
NONE = -1  # "no limit of this kind", as the script reads it
RETRY_REDIS_SECONDS = 1.0
# Settlements wait this long for a reservation to ride along with before they go alone.
SETTLE_ALONE_AFTER = 0.002
MAX_RIDING = 32

# One settlement, as both scripts apply it: the token estimate replaced by the real count (in the bucket it
# was reserved in, or now if that bucket has left the window), the slot released, the spend corrected.
# KEYS from k: tokens, in-flight, day spend, month spend; ARGV from a: bucket, token delta, actual tokens,
# cost delta, member, flags (tokens, slot, day, month: "1" or "0"), day and month key lifetimes.
_SETTLE_ONE = """
local function settle(k, a, now)
  local bucket, tok_delta, actual = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local cost_delta, member, flags = tonumber(ARGV[a + 3]), ARGV[a + 4], ARGV[a + 5]
  if string.sub(flags, 1, 1) == '1' then
    if bucket >= now - 59 then
      if tok_delta ~= 0 then redis.call('HINCRBY', KEYS[k], bucket, tok_delta) end
    elseif actual > 0 then
      redis.call('HINCRBY', KEYS[k], now, actual)
      redis.call('EXPIRE', KEYS[k], 3600)
    end
  end
  if string.sub(flags, 2, 2) == '1' then redis.call('ZREM', KEYS[k + 1], member) end
  if cost_delta ~= 0 and string.sub(flags, 3, 3) == '1' then
    redis.call('INCRBY', KEYS[k + 2], cost_delta)
    redis.call('EXPIRE', KEYS[k + 2], tonumber(ARGV[a + 6]))
  end
  if cost_delta ~= 0 and string.sub(flags, 4, 4) == '1' then
    redis.call('INCRBY', KEYS[k + 3], cost_delta)
    redis.call('EXPIRE', KEYS[k + 3], tonumber(ARGV[a + 7]))
  end
end
"""

# Settlements waiting in this worker ride along with its next reservation (ARGV[12] of them, after its own
# 11 arguments and 5 keys): under load a request costs one round trip in all, not two.
RESERVE = (
    _SETTLE_ONE
    + """
local rpm, tpm, par = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local dayb, monb = tonumber(ARGV[4]), tonumber(ARGV[5])
local est_tok, est_cost = tonumber(ARGV[6]), tonumber(ARGV[7])
local member, lease_ms = ARGV[8], tonumber(ARGV[9])
local day_ttl, month_ttl = tonumber(ARGV[10]), tonumber(ARGV[11])
local t = redis.call('TIME')
local now = tonumber(t[1])
local now_ms = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = now - 59

for i = 0, tonumber(ARGV[12]) - 1 do settle(6 + 4 * i, 13 + 8 * i, now) end

local function window(key)
  local flat = redis.call('HGETALL', key)
  local total, stale, buckets = 0, {}, {}
  for i = 1, #flat, 2 do
    local sec = tonumber(flat[i])
    if sec < oldest then
      stale[#stale + 1] = flat[i]
    else
      local n = tonumber(flat[i + 1])
      total = total + n
      buckets[#buckets + 1] = {sec, n}
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  return total, buckets
end

-- Seconds until `need` more fits under `limit`: until enough of the oldest buckets leave the window.
local function wait_for(total, buckets, limit, need)
  local excess = total + need - limit
  for _, b in ipairs(buckets) do
    excess = excess - b[2]
    if excess <= 0 then return b[1] + 60 - now end
  end
  return 60
end

local function reset(buckets)
  if #buckets == 0 then return 0 end
  return buckets[1][1] + 60 - now
end

local req_total, req_b, tok_total, tok_b = 0, {}, 0, {}
if rpm >= 0 then req_total, req_b = window(KEYS[1]) end
if tpm >= 0 then tok_total, tok_b = window(KEYS[2]) end
if tpm >= 0 and est_tok > tpm then est_tok = tpm end

local verdict, retry = 'ok', 0
if rpm >= 0 and req_total + 1 > rpm then
  verdict, retry = 'rpm', wait_for(req_total, req_b, rpm, 1)
elseif tpm >= 0 and tok_total + est_tok > tpm then
  verdict, retry = 'tpm', wait_for(tok_total, tok_b, tpm, est_tok)
end
if verdict == 'ok' and par >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[3]) >= par then verdict, retry = 'parallel', 1 end
end
local day_spent, month_spent = 0, 0
if dayb >= 0 then day_spent = tonumber(redis.call('GET', KEYS[4]) or '0') end
if monb >= 0 then month_spent = tonumber(redis.call('GET', KEYS[5]) or '0') end
if verdict == 'ok' and dayb >= 0 and day_spent + est_cost > dayb then
  verdict, retry = 'daily_budget', day_ttl
elseif verdict == 'ok' and monb >= 0 and month_spent + est_cost > monb then
  verdict, retry = 'monthly_budget', month_ttl
end

if verdict == 'ok' then
  if rpm >= 0 then
    redis.call('HINCRBY', KEYS[1], now, 1)
    redis.call('EXPIRE', KEYS[1], 61)
    req_total = req_total + 1
    if #req_b == 0 then req_b = {{now, 1}} end
  end
  if tpm >= 0 and est_tok > 0 then
    redis.call('HINCRBY', KEYS[2], now, est_tok)
    redis.call('EXPIRE', KEYS[2], 3600)
    tok_total = tok_total + est_tok
    if #tok_b == 0 then tok_b = {{now, est_tok}} end
  end
  if par >= 0 then
    redis.call('ZADD', KEYS[3], now_ms + lease_ms, member)
    redis.call('PEXPIRE', KEYS[3], lease_ms * 4)
  end
  if dayb >= 0 and est_cost > 0 then
    redis.call('INCRBY', KEYS[4], est_cost)
    redis.call('EXPIRE', KEYS[4], day_ttl + 86400)
  end
  if monb >= 0 and est_cost > 0 then
    redis.call('INCRBY', KEYS[5], est_cost)
    redis.call('EXPIRE', KEYS[5], month_ttl + 86400)
  end
end
return {verdict, retry, req_total, reset(req_b), tok_total, reset(tok_b), now, est_tok}
"""
)

# Settlements alone, when no reservation came to carry them (ARGV[1] of them).
SETTLE = (
    _SETTLE_ONE
    + """
local now = tonumber(redis.call('TIME')[1])
for i = 0, tonumber(ARGV[1]) - 1 do settle(1 + 4 * i, 2 + 8 * i, now) end
return 1
"""
)


@dataclass(slots=True)
class Verdict:
    """What one reservation found: admitted or which limit refused it, and the window's state for headers."""

    refused: str | None  # None, "rpm", "tpm", "parallel", "daily_budget", "monthly_budget"
    retry_after: int
    requests_used: int
    requests_reset: int
    tokens_used: int
    tokens_reset: int
    bucket: int  # the second the tokens were reserved in, by the limiter's clock
    reserved_tokens: int
    local: bool = False  # counted by this process only (no Redis, or Redis down and failing open)


@dataclass(slots=True)
class Reservation:
    key_id: int
    member: str
    limits: Limits
    reserved_tokens: int
    reserved_nanos: int
    bucket: int
    day: str
    month: str
    local: bool
    # How long the day's and month's spend keys must live (their period's rest, and a day): set again on settling.
    day_ttl: int = 0
    month_ttl: int = 0


class LimiterUnavailable(Exception):
    """Redis is down and RATE_LIMIT_REDIS_FAILURE is "closed"."""


def periods(now: datetime) -> tuple[str, str, int, int]:
    """The UTC day and month now, and the seconds until each ends."""
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    next_month = (now.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    day_left = max(int((tomorrow - now).total_seconds()) + 1, 1)
    month_left = max(int((next_month - now).total_seconds()) + 1, 1)
    return now.strftime("%Y%m%d"), now.strftime("%Y%m"), day_left, month_left


def _arg(value) -> int:
    return NONE if value is None else int(value)


def _budget(value) -> int:
    return NONE if value is None else usd_to_nanos(value)


def redis_keys(key_id: int, day: str, month: str) -> list[str]:
    """A key's five counters; the {key id} hash tag keeps them in one slot of a Redis cluster."""
    base = f"{settings.REDIS_KEY_PREFIX}{{{key_id}}}"
    return [f"{base}:rq", f"{base}:tk", f"{base}:fl", f"{base}:sd:{day}", f"{base}:sm:{month}"]


Settlement = tuple[Reservation, int, int]  # the reservation, its actual tokens, its actual cost (nano-dollars)


def reserve_call(
    key_id: int, limits: Limits, tokens: int, nanos: int, member: str, period: tuple, settlements: list[Settlement]
) -> tuple[list[str], list]:
    """RESERVE's keys and arguments: this reservation, then the settlements that ride along."""
    day, month, day_left, month_left = period
    keys = redis_keys(key_id, day, month)
    args = [
        _arg(limits.rpm_limit),
        _arg(limits.tpm_limit),
        _arg(limits.max_parallel_requests),
        _budget(limits.daily_budget_usd),
        _budget(limits.monthly_budget_usd),
        tokens,
        nanos,
        member,
        int(settings.LIMITS_LEASE_SECONDS * 1000),
        day_left,
        month_left,
        len(settlements),
    ]
    _add_settlements(keys, args, settlements)
    return keys, args


def settle_call(settlements: list[Settlement]) -> tuple[list[str], list]:
    keys, args = [], [len(settlements)]
    _add_settlements(keys, args, settlements)
    return keys, args


def _add_settlements(keys: list[str], args: list, settlements: list[Settlement]) -> None:
    for reservation, tokens, nanos in settlements:
        limits = reservation.limits
        keys += redis_keys(reservation.key_id, reservation.day, reservation.month)[1:]
        flags = "".join(
            "1" if kind is not None else "0"
            for kind in (
                limits.tpm_limit,
                limits.max_parallel_requests,
                limits.daily_budget_usd,
                limits.monthly_budget_usd,
            )
        )
        args += [
            reservation.bucket,
            tokens - reservation.reserved_tokens,
            tokens,
            nanos - reservation.reserved_nanos,
            reservation.member,
            flags,
            reservation.day_ttl,
            reservation.month_ttl,
        ]


def verdict_from(reply: list) -> Verdict:
    verdict, retry, req_used, req_reset, tok_used, tok_reset, now, reserved = reply
    refused = verdict.decode() if isinstance(verdict, bytes) else verdict
    return Verdict(
        refused=None if refused == "ok" else refused,
        retry_after=int(retry),
        requests_used=int(req_used),
        requests_reset=int(req_reset),
        tokens_used=int(tok_used),
        tokens_reset=int(tok_reset),
        bucket=int(now),
        reserved_tokens=int(reserved),
    )


class LocalCounters:
    """The same rules as the script, for this process only."""

    def __init__(self) -> None:
        self.requests: dict[int, dict[int, int]] = {}
        self.tokens: dict[int, dict[int, int]] = {}
        self.in_flight: dict[int, set[str]] = {}
        self.spend: dict[str, int] = {}

    def reserve(
        self,
        key_id: int,
        limits: Limits,
        tokens: int,
        nanos: int,
        member: str,
        day: str,
        month: str,
        day_left: int,
        month_left: int,
    ) -> Verdict:
        now = int(time.time())
        requests = self._window(self.requests.setdefault(key_id, {}), now)
        token_window = self._window(self.tokens.setdefault(key_id, {}), now)
        if limits.tpm_limit is not None:
            tokens = min(tokens, limits.tpm_limit)
        used_requests, used_tokens = sum(requests.values()), sum(token_window.values())
        flying = self.in_flight.setdefault(key_id, set())
        day_key, month_key = f"{key_id}:{day}", f"{key_id}:{month}"
        refused, retry = None, 0
        if limits.rpm_limit is not None and used_requests + 1 > limits.rpm_limit:
            refused, retry = "rpm", _wait_for(requests, used_requests + 1 - limits.rpm_limit, now)
        elif limits.tpm_limit is not None and used_tokens + tokens > limits.tpm_limit:
            refused, retry = "tpm", _wait_for(token_window, used_tokens + tokens - limits.tpm_limit, now)
        elif limits.max_parallel_requests is not None and len(flying) >= limits.max_parallel_requests:
            refused, retry = "parallel", 1
        elif limits.daily_budget_usd is not None and self.spend.get(day_key, 0) + nanos > usd_to_nanos(
            limits.daily_budget_usd
        ):
            refused, retry = "daily_budget", day_left
        elif limits.monthly_budget_usd is not None and self.spend.get(month_key, 0) + nanos > usd_to_nanos(
            limits.monthly_budget_usd
        ):
            refused, retry = "monthly_budget", month_left
        if refused is None:
            requests[now] = requests.get(now, 0) + 1
            used_requests += 1
            if limits.tpm_limit is not None:
                token_window[now] = token_window.get(now, 0) + tokens
                used_tokens += tokens
            if limits.max_parallel_requests is not None:
                flying.add(member)
            if limits.counts_spend:
                self.spend[day_key] = self.spend.get(day_key, 0) + nanos
                self.spend[month_key] = self.spend.get(month_key, 0) + nanos
        return Verdict(
            refused=refused,
            retry_after=retry,
            requests_used=used_requests,
            requests_reset=_reset(requests, now),
            tokens_used=used_tokens,
            tokens_reset=_reset(token_window, now),
            bucket=now,
            reserved_tokens=tokens,
            local=True,
        )

    def settle(self, reservation: Reservation, tokens: int, nanos: int) -> None:
        now = int(time.time())
        window = self.tokens.get(reservation.key_id, {})
        if reservation.limits.tpm_limit is not None:
            if reservation.bucket > now - WINDOW_SECONDS:
                window[reservation.bucket] = window.get(reservation.bucket, 0) + tokens - reservation.reserved_tokens
            else:
                window[now] = window.get(now, 0) + tokens
        self.in_flight.get(reservation.key_id, set()).discard(reservation.member)
        if reservation.limits.counts_spend:
            delta = nanos - reservation.reserved_nanos
            for period in (reservation.day, reservation.month):
                name = f"{reservation.key_id}:{period}"
                self.spend[name] = self.spend.get(name, 0) + delta

    @staticmethod
    def _window(buckets: dict[int, int], now: int) -> dict[int, int]:
        for second in [s for s in buckets if s <= now - WINDOW_SECONDS]:
            del buckets[second]
        return buckets


def _wait_for(buckets: dict[int, int], excess: int, now: int) -> int:
    for second in sorted(buckets):
        excess -= buckets[second]
        if excess <= 0:
            return second + WINDOW_SECONDS - now
    return WINDOW_SECONDS


def _reset(buckets: dict[int, int], now: int) -> int:
    return min(buckets) + WINDOW_SECONDS - now if buckets else 0


class Limiter:
    def __init__(self) -> None:
        self.local = LocalCounters()
        self._redis = None
        self._loop = None
        self._url = ""
        self._scripts_loaded = False
        self._channel: ScriptChannel | None = None
        self.redis_down_since: float | None = None
        self._retry_task: asyncio.Task | None = None
        self._pending: list[Settlement] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task] = set()
        self._held: dict[str, int] = {}  # this worker's in-flight members (by key id), whose leases it renews
        self._renewer: asyncio.Task | None = None
        self._period: tuple[int, tuple] = (-1, ())

    # --- configuration ------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        return bool(settings.REDIS_URL)

    def status(self) -> dict:
        """For /ready and the start-up log."""
        if not self.shared:
            return {"limits": "per-process", "problem": None}
        if self.redis_down_since is not None:
            return {"limits": "redis", "problem": "redis unreachable"}
        return {"limits": "redis", "problem": None}

    def client(self):
        loop = asyncio.get_running_loop()
        if self._redis is not None and (self._loop is not loop or self._url != settings.REDIS_URL):
            # A connection belongs to its event loop and its URL (tests run several servers, and move Redis).
            self._redis = None
            self.redis_down_since = None
        if self._redis is None:
            import redis.asyncio as redis

            self._loop, self._url = loop, settings.REDIS_URL
            timeout = settings.REDIS_TIMEOUT
            # The timeouts bound every call: a Redis that does not answer in time counts as down.
            self._redis = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry_on_timeout=False,
                health_check_interval=0,
            )
            self._scripts_loaded = False
            self._channel = ScriptChannel(settings.REDIS_URL, timeout)
        return self._redis

    def period(self) -> tuple:
        """periods() of now, computed once a second (date arithmetic is not free at thousands a second)."""
        second = int(time.time())
        if self._period[0] != second:
            self._period = (second, periods(datetime.now(UTC)))
        return self._period[1]

    # --- the request path -----------------------------------------------------------------

    async def reserve(
        self, key_id: int, limits: Limits, tokens: int, nanos: int, member: str
    ) -> tuple[Verdict, Reservation]:
        period = self.period()
        verdict = None
        if self.shared and self._url != settings.REDIS_URL:
            self.redis_down_since = None  # another Redis (a test moved it): found down only by trying it
        if self.shared and self.redis_down_since is None:
            verdict = await self._reserve_in_redis(key_id, limits, tokens, nanos, member, period)
        if verdict is None:
            if self.shared and settings.RATE_LIMIT_REDIS_FAILURE == "closed":
                raise LimiterUnavailable
            verdict = self.local.reserve(key_id, limits, tokens, nanos, member, *period)
        reservation = self._reservation(key_id, limits, nanos, member, period, verdict)
        if verdict.refused is None and limits.max_parallel_requests is not None and not verdict.local:
            self._held[member] = key_id
            self._ensure_renewer()
        return verdict, reservation

    @staticmethod
    def _reservation(key_id, limits, nanos, member, period, verdict: Verdict) -> Reservation:
        day, month, day_left, month_left = period
        return Reservation(
            key_id=key_id,
            member=member,
            limits=limits,
            reserved_tokens=verdict.reserved_tokens,
            reserved_nanos=nanos,
            bucket=verdict.bucket,
            day=day,
            month=month,
            local=verdict.local,
            day_ttl=day_left + 86400,
            month_ttl=month_left + 86400,
        )

    async def _reserve_in_redis(self, key_id, limits, tokens, nanos, member, period) -> Verdict | None:
        riding, self._pending = self._pending[:MAX_RIDING], self._pending[MAX_RIDING:]
        keys, args = reserve_call(key_id, limits, tokens, nanos, member, period, riding)
        self.client()
        try:
            if not self._scripts_loaded or self._channel.disconnected:
                await self._ready()
            call = self._channel.call(RESERVE_SHA, keys, args)
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return None
        try:
            # Shielded: a client that leaves mid-call must not leave a reservation nobody settles (nor lose
            # the settlements riding along); the call completes, and an admission nobody uses is settled.
            reply = await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(lambda done: self._abandoned(done, key_id, limits, nanos, member, period))
            raise
        except NoScriptError:
            self._scripts_loaded = False  # Redis restarted: the script never ran, so it can run once more
            return await self._reserve_again(keys, args)
        except Exception as exc:  # noqa: BLE001 - any failure of Redis is "Redis is down", never a 500
            self._redis_failed(exc)
            return None
        return verdict_from(reply)

    async def _reserve_again(self, keys: list[str], args: list) -> Verdict | None:
        try:
            return verdict_from(await self._call(RESERVE_SHA, keys, args))
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return None

    async def _ready(self) -> None:
        await self._channel.connect()
        if not self._scripts_loaded:
            await self._load_scripts(self._redis)

    async def _call(self, sha: str, keys: list[str], args: list):
        """One script call on the pipelined channel; a Redis that forgot the scripts (restarted) gets them again."""
        self.client()
        await self._ready()
        try:
            return await asyncio.shield(self._channel.call(sha, keys, args))
        except NoScriptError:
            await self._load_scripts(self._redis)
            return await asyncio.shield(self._channel.call(sha, keys, args))

    async def _load_scripts(self, client) -> None:
        await client.script_load(RESERVE)
        await client.script_load(SETTLE)
        self._scripts_loaded = True

    def _abandoned(self, call: asyncio.Future, key_id, limits, nanos, member, period) -> None:
        if call.cancelled() or call.exception() is not None:
            return
        verdict = verdict_from(call.result())
        if verdict.refused is None:
            self.settle(self._reservation(key_id, limits, nanos, member, period, verdict), 0, 0)

    def settle(self, reservation: Reservation, tokens: int, nanos: int) -> None:
        """Called when the exchange ends (synchronously). Queued: it rides along with this worker's next
        reservation, or goes alone a moment later when none comes."""
        self._held.pop(reservation.member, None)
        if reservation.local:
            self.local.settle(reservation, tokens, nanos)
            return
        self._pending.append((reservation, tokens, nanos))
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(SETTLE_ALONE_AFTER, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        if self.redis_down_since is not None:
            return  # lost: reserved estimates only over-count until their window or lease ends
        keys, args = settle_call(batch)
        task = asyncio.get_running_loop().create_task(self._call(SETTLE_SHA, keys, args))
        self._flushes.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, call: asyncio.Future) -> None:
        self._flushes.discard(call)
        if not call.cancelled() and call.exception() is not None:
            self._redis_failed(call.exception())

    # --- leases ---------------------------------------------------------------------------

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_leases())

    async def _renew_leases(self) -> None:
        """Every third of a lease, this worker's in-flight requests get a new lease: only a dead worker's expire."""
        lease = settings.LIMITS_LEASE_SECONDS
        while self._held:
            await asyncio.sleep(lease / 3)
            if not self._held or self.redis_down_since is not None:
                continue
            try:
                pipe = self.client().pipeline(transaction=False)
                expiry = int((time.time() + lease) * 1000)
                for member, key_id in list(self._held.items()):
                    in_flight = redis_keys(key_id, "", "")[2]
                    pipe.zadd(in_flight, {member: expiry}, xx=True)
                    # The set itself outlives its members' leases too (a lone long stream keeps its slot).
                    pipe.pexpire(in_flight, int(lease * 4000))
                await pipe.execute()
            except Exception as exc:  # noqa: BLE001
                self._redis_failed(exc)

    # --- Redis down -----------------------------------------------------------------------

    def _redis_failed(self, exc: BaseException) -> None:
        count_redis_failure()
        if self.redis_down_since is None:
            self.redis_down_since = time.monotonic()
            mode = settings.RATE_LIMIT_REDIS_FAILURE
            logger.error(
                "Redis unreachable (%s): limits %s until it answers again",
                type(exc).__name__,
                "are this process's own" if mode == "open" else "refuse every limited request (503)",
            )
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while self.redis_down_since is not None:
            await asyncio.sleep(RETRY_REDIS_SECONDS)
            try:
                await self.client().ping()
            except Exception:  # noqa: BLE001, S112 - still down: try again
                continue
            logger.warning("Redis answers again: limits are shared again")
            self.redis_down_since = None

    async def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._pending and self._redis is not None:
            self._flush_soon()  # the last settlements of a worker on its way out
        if self._flushes:
            await asyncio.wait(list(self._flushes), timeout=settings.REDIS_TIMEOUT * 4)
        for task in (*self._flushes, self._renewer, self._retry_task):
            if task is not None and not task.done():
                task.cancel()
        if self._channel is not None:
            await self._channel.close()
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception:  # noqa: BLE001, S110
                pass
            self._redis = None


_redis_failures = None


def count_redis_failure() -> None:
    """aiproxy_limits_redis_failures_total, made on first use: under gunicorn, prometheus_client needs its
    multiprocess directory to exist when a metric is made, and it does only once the workers run."""
    global _redis_failures
    if _redis_failures is None:
        from prometheus_client import Counter

        _redis_failures = Counter(
            "aiproxy_limits_redis_failures", "Calls to Redis for limits that failed or timed out."
        )
    _redis_failures.inc()


RESERVE_SHA = hashlib.sha1(RESERVE.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
SETTLE_SHA = hashlib.sha1(SETTLE.encode()).hexdigest()  # noqa: S324

limiter = Limiter()
