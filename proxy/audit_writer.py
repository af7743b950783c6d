"""The audit writer: each record is spooled to disk before the response ends, then batched into the database."""

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from proxy.audit import METADATA, audit_line, audit_record_from, insert_lines, secret_needles
from proxy.audit_journal import claim_dead_journals, write_interrupted
from proxy.audit_spool import Segment, Spool, read_lines, spool_directory
from proxy.exchange import Exchange

logger = logging.getLogger(__name__)

# AUDIT_QUEUE_MAX counts records; this caps their bytes, since one full-capture record can weigh a megabyte.
QUEUE_MAX_BYTES = 64 * 1024 * 1024
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0
# Dead workers' files are looked for at start and then this often (a sibling may have died meanwhile).
ORPHAN_SCAN_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0


# --- the writer -------------------------------------------------------------------------

Cursor = tuple[Segment, int]
Pending = tuple[Segment | None, bytes]  # None: the spool refused it, it lives in memory only


@dataclass
class WriterStats:
    accepted: int = 0  # records handed to record()
    committed: int = 0  # records the database has (replays of already stored ones included)
    recovered: int = 0  # records found in dead processes' spool files
    unspooled: int = 0  # records the spool refused, kept in memory only
    dropped: int = 0  # records lost (spool refused and memory full), each one logged
    rejected: int = 0  # records the database refused, kept in rejected.jsonl
    write_errors: int = 0  # failed batch attempts, each one retried


class AuditWriter:
    """Per-process audit writer: `record()` spools and queues, a background task inserts in batches.

    The queue holds spool lines, bounded by AUDIT_QUEUE_MAX records (and QUEUE_MAX_BYTES). When it
    is full, records go to the spool only and the writer reads them back from there, in order, once
    it has drained the queue: memory stays bounded however long the database is away.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.stats = WriterStats()
        self.last_error: str | None = None
        self._spool: Spool | None = None
        self._secrets: tuple[bytes, ...] = ()
        self._queue: deque[Pending] = deque()
        self._queued_bytes = 0
        self._spill: Cursor | None = None  # first record that is in the spool only, not in the queue
        self._recovery: Cursor | None = None  # next record to replay from a dead process's file
        self._backlog = 0
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False
        self._scanned_at = float("-inf")
        self._journals: list[Segment] = []  # begin journals of dead workers, written after their records

    # --- the request path: called on the event loop, never blocks on the database, never raises

    def record(self, exchange: Exchange) -> None:
        """Spools the finished exchange's record and queues it for the database."""
        line = self._line(exchange)
        if line is None:
            return
        spool = self._spool or self._open_spool()
        where = spool.append(line)
        self.stats.accepted += 1
        self._backlog += 1
        if where is None:
            self.stats.unspooled += 1
        elif self._spill is not None:
            return  # read back from the spool in its turn
        if len(self._queue) >= settings.AUDIT_QUEUE_MAX or self._queued_bytes + len(line) > QUEUE_MAX_BYTES:
            self._overflow(where, exchange.request_id)
            return
        self._queue.append((where[0] if where else None, line))
        self._queued_bytes += len(line)
        if self._wake is not None and len(self._queue) >= settings.AUDIT_BATCH_SIZE:
            self._wake.set()

    def _line(self, exchange: Exchange) -> bytes | None:
        try:
            return audit_line(audit_record_from(exchange), secrets=self._secrets)
        except Exception:
            logger.exception("audit record of request %s could not be built; keeping metadata", exchange.request_id)
        try:
            return audit_line(audit_record_from(exchange, capture=METADATA), secrets=self._secrets)
        except Exception:
            self.stats.dropped += 1
            logger.exception("audit record of request %s could not be built; dropped", exchange.request_id)
            return None

    def _overflow(self, where: Cursor | None, request_id: str) -> None:
        if where is not None:
            self._spill = where
            return
        self.stats.dropped += 1
        self._backlog -= 1
        logger.error("audit record of request %s dropped: spool not writable and queue full", request_id)

    def _open_spool(self) -> Spool:
        self._spool = Spool(self.directory or spool_directory())
        self._secrets = secret_needles(settings.LITELLM_API_KEY)
        return self._spool

    # --- lifecycle and status

    async def start(self) -> None:
        """Starts the background task; dead processes' spool files are replayed first."""
        if self._task is not None:
            return
        if self._spool is None:
            self._open_spool()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._stopping = False
        self._scanned_at = float("-inf")
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Writes everything pending; what the database will not take in time stays spooled for the next start."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._close()

    def backlog(self) -> int:
        """Records accepted and not yet in the database (including those recovered from dead processes)."""
        return self._backlog

    def status(self) -> dict[str, Any]:
        """What /ready and /metrics report; `problem` is set when records are at risk."""
        problem = None
        if self._spool is not None and time.monotonic() < self._spool.failing_until:
            problem = "spool_not_writable"
        elif self._task is not None and self._task.done():
            problem = "writer_stopped"
        return {
            "backlog": self._backlog,
            "queued": len(self._queue),
            "running": self._task is not None and not self._task.done(),
            "problem": problem,
            "last_error": self.last_error,
            **asdict(self.stats),
        }

    def _close(self) -> None:
        if self._backlog:
            unspooled = sum(1 for segment, _ in self._queue if segment is None)
            logger.error(
                "audit writer stopped with %d records not in the database; %d were in memory only and are lost, "
                "the rest stay in %s for the next start",
                self._backlog,
                unspooled,
                self._spool.directory if self._spool else "the spool",
            )
        if self._spool is not None:
            self._spool.close()
        self._spool, self._spill, self._recovery = None, None, None
        self._queue.clear()
        self._queued_bytes = self._backlog = 0
        self._stopping = False

    # --- the background task

    async def _run(self) -> None:
        batch: list[Pending] = []
        backoff = BACKOFF_MIN
        while True:
            try:
                batch = batch or await self._next_batch()
                if not batch:
                    if self._stopping:
                        return
                    await self._idle()
                    continue
                rejected = await self._in_thread(insert_lines, [line for _, line in batch], self._spool.directory)
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self._committed(batch, rejected)
            if len(batch) < settings.AUDIT_BATCH_SIZE and not self._stopping:
                # Caught up: let the next batch fill (or the interval pass) rather than insert every few
                # records; a batch's fixed cost is ~150 us of this thread's CPU, and its GIL time is the
                # event loop's loss (bench/cpu.sh: 16 us per record in batches of ~15, 3 in batches of 100).
                await self._idle()
            batch, backoff = [], BACKOFF_MIN

    async def _next_batch(self) -> list[Pending]:
        spool = self._spool
        if self._recovery is None and time.monotonic() - self._scanned_at > ORPHAN_SCAN_SECONDS:
            await self._claim_orphans()
        while self._recovery is not None:
            self._recovery, batch = await self._read(self._recovery, spool.orphans)
            if batch:
                return batch
        if self._journals:
            # Once a dead worker's finished records are all in (whoever replays them), what has none was
            # interrupted. Journals are closed only once written: an error leaves them for the next try.
            self._journals = await self._in_thread(write_interrupted, self._journals, spool.directory)
        if self._queue:
            size = min(len(self._queue), settings.AUDIT_BATCH_SIZE)
            batch = [self._queue.popleft() for _ in range(size)]
            self._queued_bytes -= sum(len(line) for _, line in batch)
            return batch
        while self._spill is not None:
            self._spill, batch = await self._read(self._spill, spool.segments)
            if batch:
                return batch
        self._release_done()
        return []

    async def _claim_orphans(self) -> None:
        self._scanned_at = time.monotonic()
        # Journals first: a begin claimed before its dead worker's finished records were would be written
        # while they are not yet in; claimed together, they are written once those are (_next_batch).
        self._journals += await self._in_thread(claim_dead_journals, self._spool.directory)
        claimed = await self._in_thread(self._spool.claim_orphans)
        if not claimed:
            return
        records = sum(segment.records for segment in claimed)
        logger.warning("audit writer: replaying %d records from %d spool files of dead workers", records, len(claimed))
        self._spool.orphans.extend(claimed)
        self._recovery = (claimed[0], 0)
        self._backlog += records
        self.stats.recovered += records

    async def _read(self, cursor: Cursor, segments: list[Segment]) -> tuple[Cursor | None, list[Pending]]:
        """The next lines from a spool position, and where to read after them (None: caught up)."""
        segment, offset = cursor
        lines = await self._in_thread(read_lines, segment.fd, offset, segment.size, settings.AUDIT_BATCH_SIZE)
        offset += sum(len(line) for line in lines)
        batch = [(segment, line) for line in lines]
        if offset < segment.size:
            return (segment, offset), batch
        if not segment.sealed:
            return None, batch  # caught up with the file still being written: new records queue again
        index = segments.index(segment)
        return ((segments[index + 1], 0) if index + 1 < len(segments) else None), batch

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.AUDIT_FLUSH_INTERVAL):
                await self._wake.wait()
        self._wake.clear()

    async def _in_thread(self, function, *args):
        # Our own thread, not asgiref's shared one: a slow database must not stall the request path's sync calls.
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _failed(self, exc: Exception) -> None:
        self.stats.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}".strip()[:300]
        logger.warning("audit batch not written (%s); retrying, %d records waiting", self.last_error, self._backlog)

    def _committed(self, batch: list[Pending], rejected: int) -> None:
        for segment, count in Counter(segment for segment, _ in batch if segment is not None).items():
            segment.committed += count
        self._backlog -= len(batch)
        self.stats.committed += len(batch) - rejected
        self.stats.rejected += rejected
        self.last_error = None
        self._release_done()

    def _release_done(self) -> None:
        """Deletes spool files whose every record is in the database."""
        reading = {cursor[0] for cursor in (self._spill, self._recovery) if cursor is not None}
        for segments in (self._spool.segments, self._spool.orphans):
            for segment in [s for s in segments if s.done and s not in reading]:
                segments.remove(segment)
                segment.close(delete=True)


audit_writer = AuditWriter()
