"""The begin journal of a dead worker is written only after its finished records, and never over one."""

import pytest

from proxy.audit import audit_line, audit_record_from
from proxy.audit_journal import claim_dead_journals, write_interrupted
from proxy.audit_spool import Spool
from proxy.models import AuditRecord
from tests.test_audit_record import finished_exchange

pytestmark = pytest.mark.django_db(transaction=True)


def begin_line(exchange) -> bytes:
    fields = audit_record_from(exchange)
    fields["outcome"] = "interrupted"
    return audit_line(fields)


def dead_worker(directory, *, begins, finished=()):
    """A worker's journal and audit spool as its death leaves them: written, unlocked, not replayed."""
    journal, spool = Spool(directory, kind="inflight"), Spool(directory, kind="audit")
    for exchange in begins:
        journal.append(begin_line(exchange))
    for exchange in finished:
        spool.append(audit_line(audit_record_from(exchange)))
    journal.close()
    spool.close()


def test_begins_wait_until_the_dead_workers_audit_files_are_replayed(tmp_path):
    exchange = finished_exchange()
    dead_worker(tmp_path, begins=[exchange], finished=[exchange])
    journals = claim_dead_journals(tmp_path)

    waiting = write_interrupted(journals, tmp_path)

    assert waiting == journals
    assert not AuditRecord.objects.exists()
    for path in tmp_path.glob("audit-*.jsonl"):
        path.unlink()  # as the worker that replays them does once they are in
    assert write_interrupted(waiting, tmp_path) == []
    assert list(tmp_path.glob("inflight-*.jsonl")) == []


def test_a_begin_without_a_record_is_written_as_interrupted_and_never_over_a_finished_one(tmp_path):
    lost, finished = finished_exchange(), finished_exchange()
    AuditRecord.objects.create(**{k: v for k, v in audit_record_from(finished).items() if k != "api_key_id"})
    dead_worker(tmp_path, begins=[lost, finished])

    assert write_interrupted(claim_dead_journals(tmp_path), tmp_path) == []

    outcomes = dict(AuditRecord.objects.values_list("record_id", "outcome"))
    assert {str(k): v for k, v in outcomes.items()} == {lost.record_id: "interrupted", finished.record_id: "ok"}
