"""aiproxy as a separate uvicorn process on the test database: for multi-worker and kill tests."""
from __future__ import annotations

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(database: dict | None = None) -> str:
    """The URL of the database the test run is using (pytest-django's test database)."""
    db = database or settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise RuntimeError("separate aiproxy processes need PostgreSQL: SQLite test databases are not shared")
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class AiproxyProcess:
    """`uvicorn aiproxy.asgi:application` in a child process, stopped with SIGTERM (or killed)."""

    def __init__(self, *, upstream_url: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "SECRET_KEY": settings.SECRET_KEY,
            "API_KEY_PEPPER": settings.API_KEY_PEPPER,
            "LITELLM_BASE_URL": upstream_url,
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "aiproxy.settings",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> AiproxyProcess:
        command = [sys.executable, "-m", "uvicorn", "aiproxy.asgi:application", "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"aiproxy exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError("aiproxy did not start")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, as gunicorn and container runtimes do; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)

    def __enter__(self) -> AiproxyProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
