"""Per-process cache of API keys and their policies, kept fresh by a cheap change check."""

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Count, Max
from django.utils import timezone

from policies.keys import api_keys_touch, key_hash
from policies.limits import NO_LIMITS, Limits
from policies.models import ApiKey, ModelPrice, Policy
from policies.pricing import EMPTY_PRICES, Price, PriceTable
from policies.spec import PASS_THROUGH, PolicySpec

logger = logging.getLogger(__name__)

LAST_USED_FLUSH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class KeyContext:
    """Everything the request path needs to know about an authenticated key."""

    key_id: int
    key_name: str
    key_prefix: str
    expires_at: datetime | None
    policy: PolicySpec
    # The policy's limits with the key's own overrides: the limiter counts them under key_id, which a
    # rotated key keeps (the limit belongs to the key's identity, not to its secret).
    limits: Limits = NO_LIMITS


def policy_spec(policy: Policy) -> PolicySpec:
    return PolicySpec.from_content(name=policy.name, version=policy.version, content=policy.content(), id=policy.pk)


def _change_stamp() -> tuple:
    """What changes whenever a key, policy or price is created, edited or deleted."""
    try:
        keys = ApiKey.objects.aggregate(Max("updated_at"), Count("pk"))
        policies = Policy.objects.aggregate(Max("updated_at"), Count("pk"))
        prices = ModelPrice.objects.aggregate(Max("updated_at"), Count("pk"))
        return (*keys.values(), *policies.values(), *prices.values())
    finally:
        # Runs outside any request: return the connection to the pool ourselves.
        close_old_connections()


def _load_prices() -> PriceTable:
    try:
        return PriceTable(
            [
                Price(
                    id=row.pk,
                    pattern=row.pattern,
                    input_per_million=row.input_per_million,
                    cached_input_per_million=row.cached_input_per_million,
                    output_per_million=row.output_per_million,
                )
                for row in ModelPrice.objects.all()
            ]
        )
    finally:
        close_old_connections()


def _load_key(digest: str) -> KeyContext | None:
    try:
        api_key = ApiKey.objects.select_related("policy").filter(key_hash=digest, is_active=True).first()
        if api_key is None:
            return None
        policy = api_key.policy
        if policy is None or not policy.is_active:
            policy = Policy.objects.filter(is_default=True, is_active=True).first()
        spec = policy_spec(policy) if policy else PASS_THROUGH
        return KeyContext(
            key_id=api_key.pk,
            key_name=api_key.name,
            key_prefix=api_key.prefix,
            expires_at=api_key.expires_at,
            policy=spec,
            limits=spec.limits.overridden_by(api_key.limit_overrides()),
        )
    finally:
        close_old_connections()


class ConfigCache:
    """Keys and policies served from memory; any change in the database clears it.

    Once a second (``CONFIG_POLL_INTERVAL``) a background task compares a change
    stamp (max ``updated_at`` and row count of keys and of policies) with the last
    one seen and drops every cached entry when it moved: one small query per
    second per worker, none per request. Without the poller (tests, management
    commands) a request checks inline at most once a second. Either way a revoked
    key stops working within about a second. While the database is unreachable,
    cached keys keep working; unknown keys get 503.
    """

    def __init__(self) -> None:
        self._keys: dict[str, tuple[KeyContext | None, float]] = {}
        self._stamp: tuple | None = None
        self._stamp_checked_at = float("-inf")
        self._last_used: dict[int, datetime] = {}
        self._poller_running = False
        # Set when the database failed to answer, cleared by the next change check that succeeds (the
        # poller's, once a second): meanwhile requests never wait on it (a pool timeout each, otherwise).
        self.database_down = False
        # The price table in force, reloaded with every change seen (prices are part of the change stamp).
        self.prices: PriceTable = EMPTY_PRICES

    def clear(self) -> None:
        self._keys.clear()
        self._stamp = None
        self._stamp_checked_at = float("-inf")

    async def authenticate(self, raw_key: str) -> KeyContext | None:
        """The key's context, or None when the key is unknown, revoked or expired.

        Raises DatabaseError only when the key is not cached and the database cannot be asked.
        """
        now = time.monotonic()
        # With the poller running, requests never wait for a change check (even a stuck one).
        if not self._poller_running and now - self._stamp_checked_at > settings.CONFIG_POLL_INTERVAL:
            await self._check_or_warn()
        digest = key_hash(raw_key)
        cached = self._keys.get(digest)
        if cached is None or now - cached[1] > settings.CONFIG_CACHE_MAX_AGE:
            cached = await self._load(digest, stale=cached)
        context, used_at = cached[0], timezone.now()
        if context is None or (context.expires_at is not None and context.expires_at <= used_at):
            return None
        self._last_used[context.key_id] = used_at
        return context

    async def _load(self, digest: str, *, stale: tuple | None) -> tuple[KeyContext | None, float]:
        if self.database_down:
            # Availability over freshness while the database is away: a key known a minute ago still works,
            # at once; a key never seen is refused at once.
            if stale is None:
                raise DatabaseError("the database is unavailable (found by an earlier check)")
            return stale
        try:
            # Off the shared sync thread: a slow database must not queue every other sync call behind it.
            loaded = (await sync_to_async(_load_key, thread_sensitive=False)(digest), time.monotonic())
        except DatabaseError:
            self.database_down = True
            if stale is None:
                raise
            logger.warning("database unavailable; serving cached API keys until it answers again")
            return stale
        # Re-inserted at the end: the oldest entries go first once the cache is full (unknown keys included,
        # which a client can send by the thousand).
        self._keys.pop(digest, None)
        self._keys[digest] = loaded
        while len(self._keys) > settings.CONFIG_CACHE_MAX_KEYS:
            del self._keys[next(iter(self._keys))]
        return loaded

    async def check_for_changes(self) -> None:
        # Marked before the query so that an unreachable database is not retried by every request.
        self._stamp_checked_at = time.monotonic()
        try:
            stamp = await sync_to_async(_change_stamp, thread_sensitive=False)()
        except DatabaseError:
            self.database_down = True
            raise
        self.database_down = False
        if stamp != self._stamp:
            self._keys.clear()
            self.prices = await sync_to_async(_load_prices, thread_sensitive=False)()
            self._stamp = stamp

    async def _check_or_warn(self) -> None:
        try:
            await self.check_for_changes()
        except Exception:
            logger.warning("config change check failed; serving cached keys and policies", exc_info=True)

    async def flush_last_used(self) -> None:
        if self._last_used:
            last_used, self._last_used = self._last_used, {}
            await sync_to_async(api_keys_touch, thread_sensitive=False)(last_used=last_used)

    async def run_poller(self) -> None:
        """Background loop started by the ASGI lifespan; survives database outages."""
        last_flush = time.monotonic()
        self._poller_running = True
        try:
            while True:
                await self._check_or_warn()
                if time.monotonic() - last_flush > LAST_USED_FLUSH_SECONDS:
                    last_flush = time.monotonic()
                    try:
                        await self.flush_last_used()
                    except Exception:  # the poller outlives any one failure: it is what keeps keys fresh
                        logger.warning("could not record when keys were last used", exc_info=True)
                await asyncio.sleep(settings.CONFIG_POLL_INTERVAL)
        finally:
            self._poller_running = False


config_cache = ConfigCache()
