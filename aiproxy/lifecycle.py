"""Process-wide resources, started and stopped by the ASGI lifespan."""

import asyncio
import contextlib
import logging

from django.conf import settings

from aiproxy import memory
from policies.cache import config_cache
from proxy import upstream
from proxy.audit_journal import audit_journal
from proxy.audit_writer import audit_writer
from proxy.limiter import limiter

logger = logging.getLogger(__name__)

_tasks: list[asyncio.Task] = []


async def startup() -> None:
    upstream.client()
    if settings.REDIS_URL:
        logger.info("limits: shared by every worker and instance through Redis")
    else:
        logger.warning("limits: no REDIS_URL, so each worker enforces them on its own (per process)")
    await audit_writer.start()
    _tasks.append(asyncio.create_task(config_cache.run_poller(), name="config-poller"))
    if trim := memory.malloc_trim():
        _tasks.append(asyncio.create_task(memory.trim_periodically(trim), name="malloc-trim"))


async def shutdown() -> None:
    for task in _tasks:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            # A background task that died earlier must not stop the audit writer's flush below.
            logger.exception("background task %s had failed", task.get_name())
    _tasks.clear()
    with contextlib.suppress(Exception):
        await config_cache.flush_last_used()
    try:
        await audit_writer.stop()
        audit_journal.close()  # every request has finished: its begins are released, the files deleted
    finally:
        # Whatever the writer met on its way out, the upstream connections are closed, not leaked.
        await upstream.close()
        await limiter.close()
