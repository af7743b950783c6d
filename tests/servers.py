"""uvicorn in a daemon thread: how the suite serves aiproxy and the fake upstream on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


class ServerThread:
    """Serves an ASGI app with uvicorn on its own event loop in a daemon thread."""

    def __init__(self, app: Any, *, port: int = 0, host: str = "127.0.0.1", name: str = "server") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> ServerThread:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        # Binding here (not in uvicorn) gives the real port when port=0
        # and surfaces "address in use" in the caller's thread.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=30,  # outlive the client's pooled connections
            timeout_graceful_shutdown=2,  # a stuck slow request must not hang stop()
        )
        self.configured(config)
        self._server = uvicorn.Server(config)
        # Server.run() makes its own event loop and skips signal handlers off the main thread.
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"{self.name}-{self.port}", daemon=True
        )
        self._thread.start()
        self._wait_started(timeout)
        return self

    def configured(self, config: uvicorn.Config) -> None:
        """Hook run after uvicorn's config (which resets its loggers) and before serving."""

    def _wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name} failed to start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not start in time")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
