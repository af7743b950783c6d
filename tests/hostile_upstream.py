"""An upstream that misbehaves on purpose, byte for byte: what a compromised or broken model server could send.

A raw asyncio TCP server (no HTTP library to tidy its output up). The request's `x-hostile` header picks
the answer; `x-hostile-size` sizes it:

* ``status-700``  -> a status line outside 100-599
* ``huge-event``  -> a 200 SSE stream whose one event is `x-hostile-size` bytes, sent in 64 KiB writes
* ``endless``     -> a 200 SSE stream of chat chunks that never ends (until the client goes away)
* ``huge-json``   -> a 200 JSON chat answer `x-hostile-size` bytes long
* ``malformed``   -> a 200 SSE stream of events whose JSON is not what chat chunks look like, then [DONE]
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import orjson

WRITE_BYTES = 64 * 1024
# Shapes of `data:` a chat stream must survive (issue 11): 13 of 14 crashed the relay once.
MALFORMED_EVENTS = [
    b"[1,2,3]",
    b"null",
    b"42",
    b'"text"',
    b'{"choices": "nope"}',
    b'{"choices": [1, 2]}',
    b'{"choices": [null]}',
    b'{"choices": [{"delta": "a string"}]}',
    b'{"choices": [{"delta": {"content": 7}}]}',
    b'{"choices": [{"delta": {"tool_calls": "a string"}}]}',
    b'{"choices": [{"delta": {"tool_calls": [1]}}]}',
    b'{"choices": [{"index": "x", "delta": {"content": "ok"}}]}',
    b'{"usage": "lots"}',
    b'{"choices": [{"index": 0, "delta": {"content": "fine"}, "finish_reason": "stop"}]}',
]
CHUNK = orjson.dumps(
    {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "x" * 200}}]}
)


class HostileUpstream:
    """Serves on 127.0.0.1 in a daemon thread; `url` is its base URL (use it as LITELLM_BASE_URL)."""

    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostileUpstream:
        threading.Thread(target=self._run, name="hostile-upstream", daemon=True).start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(
                line.decode("latin-1").lower().split(": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line
            )
            length = int(headers.get("content-length", 0))
            if length:
                await reader.readexactly(length)
            await ANSWERS[headers.get("x-hostile", "")](writer, int(headers.get("x-hostile-size", "1048576")))
        writer.close()


async def _status_700(writer: asyncio.StreamWriter, size: int) -> None:
    writer.write(b"HTTP/1.1 700 Odd\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
    await writer.drain()


def _sse_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


async def _huge_event(writer: asyncio.StreamWriter, size: int) -> None:
    writer.write(_sse_head() + b"data: " + b'{"choices": [{"delta": {"content": "')
    sent = 0
    while sent < size:
        writer.write(b"y" * WRITE_BYTES)
        sent += WRITE_BYTES
        await writer.drain()
    writer.write(b'"}}]}\n\ndata: [DONE]\n\n')
    await writer.drain()


async def _endless(writer: asyncio.StreamWriter, size: int) -> None:
    writer.write(_sse_head())
    while True:
        writer.write(b"data: " + CHUNK + b"\n\n")
        await writer.drain()


async def _huge_json(writer: asyncio.StreamWriter, size: int) -> None:
    head = b'{"id": "big", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": "'
    tail = b'"}}]}'
    body_size = len(head) + size + len(tail)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % body_size + head)
    sent = 0
    while sent < size:
        piece = min(WRITE_BYTES, size - sent)
        writer.write(b"z" * piece)
        sent += piece
        await writer.drain()
    writer.write(tail)
    await writer.drain()


async def _malformed(writer: asyncio.StreamWriter, size: int) -> None:
    writer.write(_sse_head() + b"".join(b"data: " + event + b"\n\n" for event in MALFORMED_EVENTS))
    writer.write(b"data: [DONE]\n\n")
    await writer.drain()


ANSWERS = {
    "status-700": _status_700,
    "huge-event": _huge_event,
    "endless": _endless,
    "huge-json": _huge_json,
    "malformed": _malformed,
}
