"""The audit writer on its own: spool first, batches into PostgreSQL, bounded memory, replays, refusals."""

import asyncio
import logging
import time

import orjson
import pytest
from django.db import OperationalError, connection

from proxy import audit_spool
from proxy import audit_writer as writer_module
from proxy.audit import REJECTED_FILE, audit_line, audit_record_from, insert_lines
from proxy.audit_writer import AuditWriter
from proxy.models import AuditRecord
from tests.test_audit_record import finished_exchange

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def spool_dir(tmp_path):
    return tmp_path / "spool"


@pytest.fixture
async def writer(spool_dir):
    writer = AuditWriter(directory=spool_dir)
    yield writer
    await writer.stop()


@pytest.fixture
def failing_database(monkeypatch):
    """The database refuses every batch until `failing_database.recover()`; counts the attempts."""

    class Outage:
        attempts = 0
        down = True

        def insert(self, lines, directory):
            self.attempts += 1
            if self.down:
                raise OperationalError("connection refused")
            return insert_lines(lines, directory)

        def recover(self):
            self.down = False

    outage = Outage()
    monkeypatch.setattr(writer_module, "insert_lines", outage.insert)
    monkeypatch.setattr(writer_module, "BACKOFF_MIN", 0.01)
    return outage


def exchanges(count: int, prefix: str = "req"):
    return [finished_exchange(request_id=f"{prefix}-{i}") for i in range(count)]


def spool_files(spool_dir) -> list:
    return sorted(spool_dir.glob("audit-*.jsonl"))


def in_fresh_connection(query):
    """Runs a query in a worker thread that hands its connection back: none is left open at teardown."""

    def run():
        try:
            return query()
        finally:
            connection.close()

    return asyncio.to_thread(run)


async def stored_request_ids() -> list[str]:
    return await in_fresh_connection(lambda: sorted(AuditRecord.objects.values_list("request_id", flat=True)))


async def stored_record(request_id: str) -> AuditRecord:
    return await in_fresh_connection(lambda: AuditRecord.objects.get(request_id=request_id))


async def until(condition, what) -> None:
    """Waits (up to 10 s) for the background writer to get somewhere."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what()
        await asyncio.sleep(0.01)


async def drained(writer: AuditWriter) -> None:
    await until(lambda: writer.backlog() == 0, writer.status)


async def test_records_reach_the_database_and_the_spool_empties(writer, spool_dir):
    await writer.start()
    for exchange in exchanges(3):
        writer.record(exchange)

    await drained(writer)
    await writer.stop()

    assert await stored_request_ids() == ["req-0", "req-1", "req-2"]
    stored = await stored_record("req-0")
    assert stored.request_body == finished_exchange().request_body
    assert stored.total_tokens == 7
    assert writer.status()["committed"] == 3
    assert spool_files(spool_dir) == []


async def test_under_steady_load_records_wait_for_the_interval_and_go_in_large_batches(writer, settings, monkeypatch):
    settings.AUDIT_FLUSH_INTERVAL = 0.1
    batches = []

    def slow_insert(lines, directory):
        batches.append(len(lines))
        time.sleep(0.02)  # records keep arriving while a batch is written
        return insert_lines(lines, directory)

    monkeypatch.setattr(writer_module, "insert_lines", slow_insert)
    await writer.start()
    for exchange in exchanges(60, "steady"):
        writer.record(exchange)
        await asyncio.sleep(0.005)
    await drained(writer)

    assert sum(batches) == 60
    # One batch per interval, not one per insert's worth of arrivals (which would be a dozen or more).
    assert len(batches) <= 6, batches


async def test_a_record_is_on_disk_when_record_returns(writer, spool_dir):
    writer.record(finished_exchange(request_id="on-disk"))

    (path,) = spool_files(spool_dir)
    (line,) = path.read_bytes().splitlines()
    assert orjson.loads(line)["request_id"] == "on-disk"
    assert path.stat().st_mode & 0o777 == 0o600  # bodies are nobody else's business


async def test_stop_writes_everything_pending(writer, spool_dir, settings):
    settings.AUDIT_BATCH_SIZE = 10
    await writer.start()
    for exchange in exchanges(25):
        writer.record(exchange)

    await writer.stop()

    assert len(await stored_request_ids()) == 25
    assert spool_files(spool_dir) == []


async def test_a_full_queue_spills_to_the_spool_and_memory_stays_bounded(writer, spool_dir, settings, monkeypatch):
    settings.AUDIT_QUEUE_MAX = 5
    settings.AUDIT_BATCH_SIZE = 4
    monkeypatch.setattr(audit_spool, "SEGMENT_MAX_BYTES", 4000)  # several files, read back in turn

    for exchange in exchanges(40):
        writer.record(exchange)
    assert (writer.status()["queued"], writer.backlog()) == (5, 40)
    assert len(spool_files(spool_dir)) > 2

    await writer.start()
    await writer.stop()

    assert await stored_request_ids() == sorted(f"req-{i}" for i in range(40))
    assert spool_files(spool_dir) == []


async def test_new_records_keep_spilling_while_the_writer_catches_up(writer, settings, failing_database):
    settings.AUDIT_QUEUE_MAX = 3
    await writer.start()
    for exchange in exchanges(10, "before"):
        writer.record(exchange)
    await asyncio.sleep(0.05)
    failing_database.recover()
    for exchange in exchanges(10, "after"):
        writer.record(exchange)
        await asyncio.sleep(0)

    await writer.stop()

    assert len(await stored_request_ids()) == 20


async def test_database_errors_are_retried_until_the_records_are_written(writer, failing_database):
    await writer.start()
    for exchange in exchanges(5):
        writer.record(exchange)
    await until(lambda: failing_database.attempts >= 3, writer.status)
    assert writer.status()["last_error"] == "OperationalError: connection refused"

    failing_database.recover()
    await drained(writer)

    assert len(await stored_request_ids()) == 5
    assert writer.status()["write_errors"] >= 3
    assert writer.status()["last_error"] is None


async def test_what_the_database_would_not_take_at_stop_is_replayed_by_the_next_writer(spool_dir, failing_database):
    first = AuditWriter(directory=spool_dir)
    await first.start()
    for exchange in exchanges(10):
        first.record(exchange)
    await first.stop(grace=0.1)
    assert len(spool_files(spool_dir)) == 1

    failing_database.recover()
    second = AuditWriter(directory=spool_dir)
    await second.start()
    await second.stop()

    assert len(await stored_request_ids()) == 10
    assert second.status()["recovered"] == 10
    assert spool_files(spool_dir) == []


async def test_a_live_writers_files_are_never_claimed(writer, spool_dir):
    busy = AuditWriter(directory=spool_dir)
    busy.record(finished_exchange(request_id="still-owned"))

    await writer.start()
    await writer.stop()

    assert writer.status()["recovered"] == 0
    assert await stored_request_ids() == []
    assert len(spool_files(spool_dir)) == 1
    await busy.stop(grace=0)  # never started: its file stays for whoever starts next


async def test_a_torn_last_line_of_a_dead_writer_is_skipped(writer, spool_dir):
    lines = [audit_line(audit_record_from(exchange)) for exchange in exchanges(2, "dead")]
    spool_dir.mkdir()
    (spool_dir / "audit-999-0badc0de-000001.jsonl").write_bytes(b"".join(lines) + lines[0][:40])

    await writer.start()
    await writer.stop()

    assert await stored_request_ids() == ["dead-0", "dead-1"]
    assert spool_files(spool_dir) == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite stores any integer in a smallint column")
async def test_a_row_the_database_refuses_is_kept_aside_and_the_rest_are_written(writer, spool_dir, caplog):
    await writer.start()
    writer.record(finished_exchange(request_id="fine-1"))
    writer.record(finished_exchange(request_id="refused", status=70000))  # past smallint
    writer.record(finished_exchange(request_id="fine-2"))

    await writer.stop()

    assert await stored_request_ids() == ["fine-1", "fine-2"]
    (kept,) = (spool_dir / REJECTED_FILE).read_bytes().splitlines()
    assert orjson.loads(kept)["request_id"] == "refused"
    assert writer.status()["rejected"] == 1
    assert "refused 1 audit records" in caplog.text


def test_a_batch_holding_an_already_stored_record_still_stores_the_new_ones(spool_dir):
    stored, new = (audit_line(audit_record_from(exchange)) for exchange in exchanges(2, "mixed"))
    insert_lines([stored], spool_dir)

    assert insert_lines([stored, new], spool_dir) == 0

    assert sorted(AuditRecord.objects.values_list("request_id", flat=True)) == ["mixed-0", "mixed-1"]


def test_replaying_a_record_stores_it_once(spool_dir):
    line = audit_line(audit_record_from(finished_exchange(request_id="twice")))

    insert_lines([line, line], spool_dir)
    insert_lines([line], spool_dir)

    assert list(AuditRecord.objects.values_list("request_id", flat=True)) == ["twice"]


async def test_without_a_writable_spool_records_wait_in_memory_and_overflow_is_counted(tmp_path, settings, caplog):
    settings.AUDIT_QUEUE_MAX = 2
    (tmp_path / "not-a-directory").write_text("")
    writer = AuditWriter(directory=tmp_path / "not-a-directory" / "spool")

    for exchange in exchanges(3):
        writer.record(exchange)

    status = writer.status()
    assert (status["problem"], status["unspooled"], status["dropped"], status["backlog"]) == (
        "spool_not_writable",
        3,
        1,
        2,
    )
    assert "audit record of request req-2 dropped" in caplog.text
    await writer.start()
    await writer.stop()
    assert await stored_request_ids() == ["req-0", "req-1"]


async def test_a_record_that_cannot_be_serialised_keeps_its_metadata(writer, caplog):
    caplog.set_level(logging.ERROR)
    await writer.start()

    writer.record(finished_exchange(request_id="odd", request_body={"tags": {"a", "b"}}))
    await writer.stop()

    stored = await stored_record("odd")
    assert (stored.capture, stored.request_body, stored.status_code) == ("metadata", None, 200)
    assert "could not be built; keeping metadata" in caplog.text
