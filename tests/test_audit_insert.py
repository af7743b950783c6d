"""Spool lines into rows: one statement per batch on PostgreSQL, the same rows the ORM would store."""

import orjson
import pytest
from django.db import connection

from proxy import audit
from proxy.audit import _bulk_created, audit_line, audit_record_from, insert_lines
from proxy.errors import upstream_cut
from proxy.exchange import Outcome
from proxy.models import AuditRecord
from tests.test_audit_record import STORED_FIELDS, finished_exchange

pytestmark = pytest.mark.django_db(transaction=True)

# Values that a careless encoding would bend: escapes, non-ASCII, numbers, nulls, nesting, IPv6.
AWKWARD_BODY = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": 'Quote " backslash \\ tab \t newline \n \\u0041 — ünïcødé 🙂'}],
    "temperature": 0.1,
    "max_tokens": 12,
    "logit_bias": {"50256": -100},
    "metadata": None,
}
ID_FIELDS = {"record_id", "request_id"}


def awkward_line(request_id: str) -> bytes:
    exchange = finished_exchange(
        request_id=request_id,
        client_ip="2001:db8::1",
        request_body=AWKWARD_BODY,
        forwarded_body={**AWKWARD_BODY, "temperature": 0.2},
        modifications=["system_context", "defaults"],
    )
    return audit_line(audit_record_from(exchange))


def stored(request_id: str) -> dict:
    return AuditRecord.objects.values(*(STORED_FIELDS - ID_FIELDS)).get(request_id=request_id)


@pytest.fixture
def only_the_single_statement(monkeypatch):
    """Fails the ORM's path: what is stored then went in as one statement."""

    def refuse(*args):
        raise AssertionError("the batch left the single-statement path")

    monkeypatch.setattr(audit, "_bulk_created", refuse)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the single statement is PostgreSQL's")
def test_a_batch_goes_in_as_one_statement(spool_dir, only_the_single_statement):
    lines = [awkward_line(f"batch-{i}") for i in range(3)]

    assert insert_lines(lines, spool_dir) == 0

    assert sorted(AuditRecord.objects.values_list("request_id", flat=True)) == ["batch-0", "batch-1", "batch-2"]


def test_the_stored_row_is_the_one_the_orm_would_store(spool_dir):
    fields = orjson.loads(awkward_line("fast"))
    twin = {**fields, "request_id": "orm", "record_id": "6d4c956b-5f8d-49e8-984d-338232e492a6"}
    insert_lines([orjson.dumps(fields) + b"\n"], spool_dir)
    _bulk_created([(b"", twin)])

    assert stored("fast") == stored("orm")
    assert stored("fast")["request_body"] == AWKWARD_BODY
    assert stored("fast")["client_ip"] == "2001:db8::1"


def test_an_error_record_is_stored_whole(spool_dir):
    exchange = finished_exchange(request_id="cut", outcome=None)
    exchange.fail(upstream_cut(), Outcome.UPSTREAM_CUT)
    insert_lines([audit_line(audit_record_from(exchange))], spool_dir)

    row = AuditRecord.objects.get(request_id="cut")
    assert (row.outcome, row.error_type) == (Outcome.UPSTREAM_CUT, upstream_cut().type)


def test_a_line_from_an_older_version_gets_the_defaults_of_the_columns_it_lacks(spool_dir):
    fields = orjson.loads(awkward_line("old"))
    del fields["bodies_truncated"], fields["modifications"]

    assert insert_lines([orjson.dumps(fields) + b"\n"], spool_dir) == 0

    row = AuditRecord.objects.get(request_id="old")
    assert (row.bodies_truncated, row.modifications) == (False, [])


def test_a_field_from_a_newer_version_is_ignored(spool_dir):
    fields = {**orjson.loads(awkward_line("new")), "column_of_the_future": 1}

    assert insert_lines([orjson.dumps(fields) + b"\n"], spool_dir) == 0

    assert AuditRecord.objects.filter(request_id="new").exists()


def test_a_torn_line_is_set_aside_and_the_batch_still_stored(spool_dir):
    good = awkward_line("good")

    assert insert_lines([good, good[:40] + b"\n"], spool_dir) == 1

    assert AuditRecord.objects.filter(request_id="good").exists()
    assert (spool_dir / audit.REJECTED_FILE).read_bytes() == good[:40] + b"\n"


@pytest.fixture
def spool_dir(tmp_path):
    directory = tmp_path / "spool"
    directory.mkdir()
    return directory
