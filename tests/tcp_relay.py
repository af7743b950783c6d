"""A TCP relay in a background thread that a test can cut (every connection dropped, new ones refused) and restore."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any


class TcpRelay:
    """Listens on 127.0.0.1 and forwards each connection to (host, port), byte for byte.

    `cut()` is an outage as a client sees one: open connections are reset and new ones are
    refused (the listening socket is closed), until `restore()` listens on the same port again.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-relay", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    def start(self) -> TcpRelay:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _call(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._relay, sock=sock)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for pair in list(self._connections):
            for writer in pair:
                writer.transport.abort()  # a reset, not a polite close
        self._connections.clear()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, server_writer)
        self._connections.add(pair)
        try:
            await asyncio.gather(_pump(client_reader, server_writer), _pump(server_reader, client_writer))
        finally:
            self._connections.discard(pair)
            for writer in pair:
                writer.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
