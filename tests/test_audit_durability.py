"""No record of a completed response is lost: database outages, SIGTERM and SIGKILL of a real aiproxy process."""

import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from proxy.models import AuditRecord
from tests.processes import AiproxyProcess, database_url
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="separate aiproxy processes need a shared PostgreSQL database"
)
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def relay(transactional_db):
    """A cuttable line between aiproxy and the test database."""
    database = settings.DATABASES["default"]
    with TcpRelay(database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)) as relay:
        yield relay


@pytest.fixture
def aiproxy_env(relay, tmp_path) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url(port=relay.port),
        "DATABASE_POOL_TIMEOUT": "1",
        "AUDIT_SPOOL_DIR": str(tmp_path / "spool"),
    }


@pytest.fixture
def start_aiproxy(fake_upstream, tmp_path):
    def start(env: dict[str, str], log_name: str = "aiproxy.log") -> AiproxyProcess:
        return AiproxyProcess(upstream_url=fake_upstream.url, log_path=tmp_path / log_name, env=env)

    return start


def request_ids(run: str, group: str, count: int) -> list[str]:
    return [f"{run}-{group}-{i}" for i in range(count)]


def stored_count(run: str) -> int:
    return AuditRecord.objects.filter(request_id__startswith=run).count()


def wait_for_records(run: str, expected: int, process: AiproxyProcess | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while stored_count(run) < expected:
        assert time.monotonic() < deadline, (stored_count(run), process.log() if process else "")
        time.sleep(0.1)
    assert stored_count(run) == expected


def spool_files(env: dict[str, str]) -> list[Path]:
    return list(Path(env["AUDIT_SPOOL_DIR"]).glob("*/audit-*.jsonl"))


OUTAGE_SECONDS = 30


def test_a_thirty_second_outage_loses_no_record_and_serves_known_keys(relay, aiproxy_env, start_aiproxy, alice_key):
    run = uuid.uuid4().hex[:8]
    with start_aiproxy(aiproxy_env) as aiproxy:
        aiproxy.send(alice_key, request_ids(run, "before", 5))  # also warms the key cache
        relay.cut()
        cut_at = time.monotonic()
        during = 0
        while time.monotonic() - cut_at < OUTAGE_SECONDS:
            aiproxy.send(alice_key, request_ids(run, f"during{during}", 5))
            during += 5
            time.sleep(3)
        ready = httpx.get(aiproxy.url + "/ready", timeout=10).json()
        relay.restore()
        aiproxy.send(alice_key, request_ids(run, "after", 5))

        wait_for_records(run, 10 + during, aiproxy)

    assert ready["status"] == "unavailable"
    assert ready["audit_backlog"] >= during
    assert spool_files(aiproxy_env) == []


def test_a_killed_workers_records_are_written_by_the_next_one(relay, aiproxy_env, start_aiproxy, alice_key):
    run = uuid.uuid4().hex[:8]
    with start_aiproxy(aiproxy_env, "first.log") as first:
        first.send(alice_key, request_ids(run, "warm", 2))
        wait_for_records(run, 2, first)
        # With the database away, the responses complete and their records can only be in the spool.
        relay.cut()
        first.send(alice_key, request_ids(run, "killed", 10))
        first.signal(signal.SIGKILL)
    relay.restore()
    assert stored_count(run) == 2
    assert len(spool_files(aiproxy_env)) == 1

    with start_aiproxy(aiproxy_env, "second.log") as second:
        wait_for_records(run, 12, second)

    assert spool_files(aiproxy_env) == []


def test_sigterm_writes_pending_records_before_exit(aiproxy_env, start_aiproxy, alice_key):
    run = uuid.uuid4().hex[:8]
    # Nothing is written on its own: only the shutdown can have written them.
    lazy = {**aiproxy_env, "AUDIT_FLUSH_INTERVAL": "600", "AUDIT_BATCH_SIZE": "100000"}
    aiproxy = start_aiproxy(lazy).start()
    aiproxy.send(alice_key, request_ids(run, "pending", 10))
    assert stored_count(run) == 0

    aiproxy.signal(signal.SIGTERM)

    # uvicorn re-raises the signal once it has shut down cleanly.
    assert aiproxy.process.returncode in (0, -signal.SIGTERM), aiproxy.log()
    assert "Application shutdown complete" in aiproxy.log()
    assert stored_count(run) == 10
    assert spool_files(lazy) == []


def test_requests_in_flight_on_a_killed_worker_are_recorded_as_interrupted(
    relay, aiproxy_env, start_aiproxy, alice_key, fake_upstream
):
    run = uuid.uuid4().hex[:8]
    in_flight = request_ids(run, "in-flight", 6)
    with start_aiproxy(aiproxy_env, "first.log") as first:
        first.send(alice_key, request_ids(run, "warm", 2))
        wait_for_records(run, 2, first)
        fake_upstream.reset()
        # The upstream thinks for 30 s: the worker dies with all six waiting for it.
        with ThreadPoolExecutor(len(in_flight)) as pool:
            for request_id in in_flight:
                pool.submit(
                    httpx.post,
                    first.url + "/v1/chat/completions",
                    json=CHAT,
                    headers={"Authorization": f"Bearer {alice_key}", "X-Request-ID": request_id, "x-fake-delay": "30"},
                    timeout=60,
                )
            deadline = time.monotonic() + 10
            while len(fake_upstream.requests) < len(in_flight):
                assert time.monotonic() < deadline, first.log()
                time.sleep(0.05)
            first.signal(signal.SIGKILL)
    assert stored_count(run) == 2

    with start_aiproxy(aiproxy_env, "second.log") as second:
        wait_for_records(run, 8, second)

    records = AuditRecord.objects.filter(request_id__in=in_flight)
    assert sorted(r.request_id for r in records) == sorted(in_flight)
    assert {(r.outcome, r.key_name, r.model_requested) for r in records} == {("interrupted", "alice-app", "gpt-4o")}
    assert all(r.request_body == CHAT for r in records)
