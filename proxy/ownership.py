"""Stored objects belong to the key that created them: who owns a Responses API response id."""

import asyncio
from collections import OrderedDict

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from policies.cache import KeyContext
from policies.surfaces import RESPONSES
from proxy.errors import PolicyRejected, service_unavailable
from proxy.models import AuditRecord

# Ids this worker saw created, so that a create followed at once by a read never waits for the audit writer.
RECENT_MAX = 10_000
# A record is in the database within a few flush intervals of its request: a miss is asked again that long.
LOOKUP_ATTEMPTS = 4

_recent: OrderedDict[str, int] = OrderedDict()


def owner_remember(*, stored_id: str, key_id: int) -> None:
    _recent[stored_id] = key_id
    _recent.move_to_end(stored_id)
    while len(_recent) > RECENT_MAX:
        _recent.popitem(last=False)


def _owner_from_audit(stored_id: str) -> int | None:
    """The key whose create request recorded this id (the audit record is the proof of creation)."""
    try:
        return (
            AuditRecord.objects.filter(stored_id=stored_id, endpoint=RESPONSES.name, api_key__isnull=False)
            .values_list("api_key_id", flat=True)
            .order_by("id")
            .first()
        )
    finally:
        close_old_connections()  # off the request thread: hand the connection back now


async def owner_of(stored_id: str) -> int | None:
    """The id of the key that created the object, or None when no key did (as far as the records say)."""
    if stored_id in _recent:
        return _recent[stored_id]
    pause = max(settings.AUDIT_FLUSH_INTERVAL, 0.05)
    for attempt in range(LOOKUP_ATTEMPTS):
        owner = await sync_to_async(_owner_from_audit, thread_sensitive=False)(stored_id)
        if owner is not None:
            return owner
        if attempt + 1 < LOOKUP_ATTEMPTS:
            # Created through another worker a moment ago: its record may still be on its way.
            await asyncio.sleep(pause * (attempt + 1))
    return None


async def require_owner(key: KeyContext, stored_id: str, *, param: str | None = None) -> None:
    """404 unless `key` created the stored object: another key's object is as good as absent."""
    try:
        owner = await owner_of(stored_id)
    except DatabaseError as exc:
        raise service_unavailable("who owns stored responses") from exc
    if owner != key.key_id:
        raise PolicyRejected(
            status=404,
            message=f"No response found with id '{stored_id}'.",
            code="not_found",
            param=param,
        )
