"""aiproxy as a separate uvicorn process on the test database: for multi-worker, outage and kill tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(*, port: int | None = None) -> str:
    """The URL of the database this test run uses (pytest-django's), optionally through another port."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise RuntimeError("separate aiproxy processes need PostgreSQL: SQLite test databases are not shared")
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{port or db['PORT'] or 5432}/{db['NAME']}"


class AiproxyProcess:
    """aiproxy in a child process: one uvicorn worker, or gunicorn with gunicorn.conf.py as production runs it."""

    def __init__(
        self, *, upstream_url: str, log_path: Path, env: dict[str, str] | None = None, gunicorn: bool = False
    ) -> None:
        self.gunicorn = gunicorn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",  # the same secrets: keys made in the test work there
            "DATABASE_URL": database_url(),
            "LITELLM_BASE_URL": upstream_url,
            "AUDIT_SPOOL_DIR": str(log_path.parent / "spool"),
            "LOG_FORMAT": "text",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> AiproxyProcess:
        command = [sys.executable, "-m", "uvicorn", "aiproxy.asgi:application", "--port", str(self.port)]
        if self.gunicorn:
            command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
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

    def send(self, key: str, request_ids: list[str], *, body: dict = CHAT) -> list[httpx.Response]:
        """The requests, all at once (as traffic comes), each answered 200."""
        responses = asyncio.run(self._send(key, request_ids, body))
        for response in responses:
            assert response.status_code == 200, (response.text, self.log())
        return responses

    async def _send(self, key: str, request_ids: list[str], body: dict) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/chat/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id},
                    )
                    for request_id in request_ids
                )
            )

    def signal(self, signum: int) -> int:
        """Sends the signal (SIGTERM: as gunicorn and container runtimes stop a worker); the exit code."""
        self.process.send_signal(signum)
        return self.process.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def __enter__(self) -> AiproxyProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None:
            try:
                self.signal(signal.SIGTERM)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
