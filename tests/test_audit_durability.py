"""No record of a completed response is lost: database outages, SIGTERM and SIGKILL of a real aiproxy process."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from proxy.models import AuditRecord
from tests.tcp_relay import TcpRelay

BASE_DIR = Path(__file__).resolve().parent.parent
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}


class AiproxyProcess:
    """aiproxy under uvicorn in its own process, as a worker runs in production."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "AiproxyProcess":
        command = [sys.executable, "-m", "uvicorn", "aiproxy.asgi:application", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=BASE_DIR, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while not self._healthy():
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def send(self, key: str, request_ids: list[str]) -> None:
        """The requests, all at once (as traffic comes), each answered 200."""
        asyncio.run(self._send(key, request_ids))

    async def _send(self, key: str, request_ids: list[str]) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/v1/chat/completions",
                        json=CHAT,
                        headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id},
                    )
                    for request_id in request_ids
                )
            )
        for response in responses:
            assert response.status_code == 200, (response.text, self.log())

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)
        self.process.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def __enter__(self) -> "AiproxyProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def relay(transactional_db):
    """A cuttable line between aiproxy and the test database."""
    database = settings.DATABASES["default"]
    with TcpRelay(database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)) as relay:
        yield relay


@pytest.fixture
def aiproxy_env(relay, fake_upstream, tmp_path) -> dict[str, str]:
    database = settings.DATABASES["default"]
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",  # the same secret: keys made here work there
        "DATABASE_URL": f"postgres://{credentials}@127.0.0.1:{relay.port}/{database['NAME']}",
        "DATABASE_POOL_TIMEOUT": "1",
        "LITELLM_BASE_URL": fake_upstream.url,
        "AUDIT_SPOOL_DIR": str(tmp_path / "spool"),
        "LOG_FORMAT": "text",
    }


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


def test_records_made_while_the_database_is_away_are_written_when_it_returns(relay, aiproxy_env, alice_key, tmp_path):
    run = uuid.uuid4().hex[:8]
    with AiproxyProcess(aiproxy_env, tmp_path / "aiproxy.log") as aiproxy:
        aiproxy.send(alice_key, request_ids(run, "before", 5))  # also warms the key cache
        relay.cut()
        aiproxy.send(alice_key, request_ids(run, "during", 20))
        ready = httpx.get(aiproxy.url + "/ready", timeout=10).json()
        aiproxy.send(alice_key, request_ids(run, "still-during", 5))
        relay.restore()
        aiproxy.send(alice_key, request_ids(run, "after", 5))

        wait_for_records(run, 35, aiproxy)

    assert ready["status"] == "unavailable"
    assert ready["audit_backlog"] >= 20
    assert spool_files(aiproxy_env) == []


def test_a_killed_workers_records_are_written_by_the_next_one(relay, aiproxy_env, alice_key, tmp_path):
    run = uuid.uuid4().hex[:8]
    with AiproxyProcess(aiproxy_env, tmp_path / "first.log") as first:
        first.send(alice_key, request_ids(run, "warm", 2))
        wait_for_records(run, 2, first)
        # With the database away, the responses complete and their records can only be in the spool.
        relay.cut()
        first.send(alice_key, request_ids(run, "killed", 10))
        first.signal(signal.SIGKILL)
    relay.restore()
    assert stored_count(run) == 2
    assert len(spool_files(aiproxy_env)) == 1

    with AiproxyProcess(aiproxy_env, tmp_path / "second.log") as second:
        wait_for_records(run, 12, second)

    assert spool_files(aiproxy_env) == []


def test_sigterm_writes_pending_records_before_exit(aiproxy_env, alice_key, tmp_path):
    run = uuid.uuid4().hex[:8]
    # Nothing is written on its own: only the shutdown can have written them.
    lazy = {**aiproxy_env, "AUDIT_FLUSH_INTERVAL": "600", "AUDIT_BATCH_SIZE": "100000"}
    aiproxy = AiproxyProcess(lazy, tmp_path / "aiproxy.log").start()
    aiproxy.send(alice_key, request_ids(run, "pending", 10))
    assert stored_count(run) == 0

    aiproxy.signal(signal.SIGTERM)

    # uvicorn re-raises the signal once it has shut down cleanly.
    assert aiproxy.process.returncode in (0, -signal.SIGTERM), aiproxy.log()
    assert "Application shutdown complete" in aiproxy.log()
    assert stored_count(run) == 10
    assert spool_files(lazy) == []
