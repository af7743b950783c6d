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
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from prometheus_client import Counter

from policies.limits import Limits, usd_to_nanos

logger = logging.getLogger(__name__)
REDIS_FAILURES = Counter("aiproxy_limits_redis_failures", "Calls to Redis for limits that failed or timed out.")

WINDOW_SECONDS = 60
NONE = -1  # "no limit of this kind", as the script reads it
RETRY_REDIS_SECONDS = 1.0

RESERVE = """
local rpm, tpm, par = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local dayb, monb = tonumber(ARGV[4]), tonumber(ARGV[5])
local est_tok, est_cost = tonumber(ARGV[6]), tonumber(ARGV[7])
local member, lease_ms = ARGV[8], tonumber(ARGV[9])
local day_ttl, month_ttl = tonumber(ARGV[10]), tonumber(ARGV[11])
local t = redis.call('TIME')
local now = tonumber(t[1])
local now_ms = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = now - 59

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

local verdict, retry, in_flight = 'ok', 0, 0
if rpm >= 0 and req_total + 1 > rpm then
  verdict, retry = 'rpm', wait_for(req_total, req_b, rpm, 1)
elseif tpm >= 0 and tok_total + est_tok > tpm then
  verdict, retry = 'tpm', wait_for(tok_total, tok_b, tpm, est_tok)
end
if verdict == 'ok' and par >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  in_flight = redis.call('ZCARD', KEYS[3])
  if in_flight >= par then verdict, retry = 'parallel', 1 end
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

SETTLE = """
local bucket, tok_delta, actual_tok = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cost_delta = tonumber(ARGV[4])
local now = tonumber(redis.call('TIME')[1])
if ARGV[6] == '1' then
  if bucket >= now - 59 then
    if tok_delta ~= 0 then redis.call('HINCRBY', KEYS[1], bucket, tok_delta) end
  elseif actual_tok > 0 then
    redis.call('HINCRBY', KEYS[1], now, actual_tok)
    redis.call('EXPIRE', KEYS[1], 3600)
  end
end
if ARGV[7] == '1' then redis.call('ZREM', KEYS[2], ARGV[5]) end
if ARGV[8] == '1' and cost_delta ~= 0 then redis.call('INCRBY', KEYS[3], cost_delta) end
if ARGV[9] == '1' and cost_delta ~= 0 then redis.call('INCRBY', KEYS[4], cost_delta) end
return 1
"""


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
        self._reserve = self._settle = None
        self.redis_down_since: float | None = None
        self._retry_task: asyncio.Task | None = None
        self._pending: list[tuple[Reservation, int, int]] = []
        self._flusher: asyncio.Task | None = None
        self._held: dict[str, int] = {}  # this worker's in-flight members (by key id), whose leases it renews
        self._renewer: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

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
            self._loop, self._url = loop, settings.REDIS_URL
            import redis.asyncio as redis

            timeout = settings.REDIS_TIMEOUT
            self._redis = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry_on_timeout=False,
                health_check_interval=0,
            )
            self._reserve = self._redis.register_script(RESERVE)
            self._settle = self._redis.register_script(SETTLE)
        return self._redis

    def _keys(self, key_id: int, day: str, month: str) -> list[str]:
        base = f"{settings.REDIS_KEY_PREFIX}{{{key_id}}}"
        return [f"{base}:rq", f"{base}:tk", f"{base}:fl", f"{base}:sd:{day}", f"{base}:sm:{month}"]

    # --- the request path -----------------------------------------------------------------

    async def reserve(
        self, key_id: int, limits: Limits, tokens: int, nanos: int, member: str
    ) -> tuple[Verdict, Reservation]:
        day, month, day_left, month_left = periods(datetime.now(UTC))
        verdict = None
        if self.shared and self._url != settings.REDIS_URL:
            self.redis_down_since = None  # another Redis (a test moved it): found down only by trying it
        if self.shared and self.redis_down_since is None:
            verdict = await self._reserve_in_redis(
                key_id, limits, tokens, nanos, member, day, month, day_left, month_left
            )
        if verdict is None:
            if self.shared and settings.RATE_LIMIT_REDIS_FAILURE == "closed":
                raise LimiterUnavailable
            verdict = self.local.reserve(key_id, limits, tokens, nanos, member, day, month, day_left, month_left)
        reservation = Reservation(
            key_id=key_id,
            member=member,
            limits=limits,
            reserved_tokens=verdict.reserved_tokens,
            reserved_nanos=nanos,
            bucket=verdict.bucket,
            day=day,
            month=month,
            local=verdict.local,
        )
        if verdict.refused is None and limits.max_parallel_requests is not None and not verdict.local:
            self._held[member] = key_id
            self._ensure_renewer()
        return verdict, reservation

    async def _reserve_in_redis(self, key_id, limits, tokens, nanos, member, day, month, day_left, month_left):
        self.client()
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
        ]
        try:
            reply = await asyncio.wait_for(
                self._reserve(keys=self._keys(key_id, day, month), args=args), settings.REDIS_TIMEOUT
            )
        except Exception as exc:  # noqa: BLE001 - any failure of Redis is "Redis is down", never a 500
            self._redis_failed(exc)
            return None
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

    def settle(self, reservation: Reservation, tokens: int, nanos: int) -> None:
        """Called when the exchange ends (synchronously): queued, sent in the next batch."""
        self._held.pop(reservation.member, None)
        if reservation.local:
            self.local.settle(reservation, tokens, nanos)
            return
        self._pending.append((reservation, tokens, nanos))
        if self._flusher is None or self._flusher.done():
            with_loop = asyncio.get_running_loop()
            self._flusher = with_loop.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                pipe = self.client().pipeline(transaction=False)
                for reservation, tokens, nanos in batch:
                    await self._queue_settle(pipe, reservation, tokens, nanos)
                await asyncio.wait_for(pipe.execute(), settings.REDIS_TIMEOUT * 4)
            except Exception as exc:  # noqa: BLE001
                # Lost settlements only over-count (reserved estimates stay) until the window or lease ends.
                self._redis_failed(exc)
                return

    async def _queue_settle(self, pipe, reservation: Reservation, tokens: int, nanos: int) -> None:
        limits = reservation.limits
        keys = self._keys(reservation.key_id, reservation.day, reservation.month)
        args = [
            reservation.bucket,
            tokens - reservation.reserved_tokens,
            tokens,
            nanos - reservation.reserved_nanos,
            reservation.member,
            int(limits.tpm_limit is not None),
            int(limits.max_parallel_requests is not None),
            int(limits.daily_budget_usd is not None),
            int(limits.monthly_budget_usd is not None),
        ]
        await self._settle(keys=keys[1:], args=args, client=pipe)  # queued in the pipeline, sent by execute()

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
                    pipe.zadd(self._keys(key_id, "", "")[2], {member: expiry}, xx=True)
                await asyncio.wait_for(pipe.execute(), settings.REDIS_TIMEOUT * 4)
            except Exception as exc:  # noqa: BLE001
                self._redis_failed(exc)

    # --- Redis down -----------------------------------------------------------------------

    def _redis_failed(self, exc: BaseException) -> None:
        REDIS_FAILURES.inc()
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
                await asyncio.wait_for(self.client().ping(), settings.REDIS_TIMEOUT)
            except Exception:  # noqa: BLE001, S112 - still down: try again
                continue
            logger.warning("Redis answers again: limits are shared again")
            self.redis_down_since = None

    async def close(self) -> None:
        for task in (self._flusher, self._renewer, self._retry_task):
            if task is not None and not task.done():
                if task is self._flusher:
                    with_timeout = asyncio.wait_for(asyncio.shield(task), settings.REDIS_TIMEOUT * 4)
                    try:
                        await with_timeout
                    except Exception:  # noqa: BLE001, S110 - best effort on the way out
                        pass
                task.cancel()
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception:  # noqa: BLE001, S110
                pass
            self._redis = None


limiter = Limiter()
