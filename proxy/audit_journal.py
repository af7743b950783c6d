"""The begin journal: each request's record as far as it is known when it goes upstream, until it finishes.

A worker killed mid-request (SIGKILL, out of memory) never writes the records of its requests in
flight. Each one's beginning is in this worker's journal (a spool of its own kind, locked while the
worker lives); the worker that claims a dead worker's spool also claims its journal and, once the
dead worker's finished records are in, writes every begin that has none as a record with outcome
`interrupted`. So one record per request that reached upstream holds whatever kills the process.
"""

import logging
from pathlib import Path

from django.conf import settings

from proxy.audit import audit_line, audit_record_from, insert_missing, secret_needles
from proxy.audit_spool import Segment, Spool, owner_of, read_lines, spool_directory
from proxy.exchange import Exchange, Outcome

logger = logging.getLogger(__name__)


class AuditJournal:
    def __init__(self) -> None:
        self._spool: Spool | None = None
        self._secrets: tuple[bytes, ...] = ()

    def begin(self, exchange: Exchange) -> None:
        """Journals the exchange's beginning; its finish releases it. Never raises on the request path."""
        try:
            fields = audit_record_from(exchange)
            fields["outcome"] = str(Outcome.INTERRUPTED)
            line = audit_line(fields, secrets=self._secrets)
        except Exception:
            logger.exception("the begin record of request %s could not be built", exchange.request_id)
            return
        spool = self._spool or self._open()
        where = spool.append(line)
        if where is not None:
            segment = where[0]
            exchange.on_finish(lambda _finished: self._finished(segment))

    def _open(self) -> Spool:
        self._spool = Spool(spool_directory(), kind="inflight")
        self._secrets = secret_needles(settings.LITELLM_API_KEY)
        return self._spool

    def _finished(self, segment: Segment) -> None:
        segment.committed += 1
        if segment.done and self._spool is not None and segment in self._spool.segments:
            self._spool.segments.remove(segment)
            segment.close(delete=True)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def claim_dead_journals(directory: Path) -> list[Segment]:
    """The journals of dead workers (their owner no longer holds the lock); runs in the writer's thread."""
    return Spool(directory, kind="inflight").claim_orphans()


def write_interrupted(segments: list[Segment], directory: Path) -> list[Segment]:
    """Writes each journaled begin that has no record yet as `interrupted`, and deletes its journal.

    Only once every audit file of the journal's dead worker is gone (replayed, by whichever worker
    claimed it): a begin written before its finished record would take that record's place. Returns
    the journals still waiting for that.
    """
    waiting = [s for s in segments if any(directory.glob(f"audit-{owner_of(s.path)}-*.jsonl"))]
    ready = [s for s in segments if s not in waiting]
    lines = [line for segment in ready for line in read_lines(segment.fd, 0, segment.size, segment.records)]
    written = insert_missing(lines, directory) if lines else 0
    for segment in ready:
        segment.close(delete=True)
    if written:
        logger.warning("audit writer: %d requests of dead workers recorded as interrupted", written)
    return waiting


audit_journal = AuditJournal()
