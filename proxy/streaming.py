"""SSE relay: each event goes to the client as it arrives, and is collected for the audit record."""

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

import orjson

from policies.streams import StreamRewriter
from policies.surfaces import Surface
from proxy.errors import upstream_cut, upstream_timeout
from proxy.exchange import Exchange, Outcome
from proxy.upstream import UPSTREAM_ERRORS, UpstreamResponse, is_timeout

EVENT_END = re.compile(rb"\r?\n\r?\n")
DONE = b"[DONE]"


def parse_data(event: bytes) -> bytes | None:
    """The payload of an event's data lines (joined), or None for comments and keep-alives."""
    data = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


class SseRelay:
    """An async iterator over the client's SSE bytes, fed from the open upstream response.

    The surface adapter says how events are framed, which one ends a complete stream and
    how the stream reassembles into one response for the audit record.
    """

    def __init__(
        self, upstream: UpstreamResponse, exchange: Exchange, surface: Surface, rewriter: StreamRewriter | None
    ) -> None:
        self.upstream = upstream
        self.exchange = exchange
        self.surface = surface
        self.rewriter = rewriter
        self.assembler = surface.assembler()
        self.saw_terminal = False
        self.terminal_sent = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        outcome = None
        try:
            async for out in self._relay():
                yield out
                # Handed to the server: from here on the client has a complete stream, whatever it does next.
                self.terminal_sent = self.saw_terminal
            if not self.saw_terminal:
                outcome = Outcome.UPSTREAM_CUT
                self.exchange.error = upstream_cut()
                yield self.surface.error_event(self.exchange.error.body()["error"])
        except UPSTREAM_ERRORS as exc:
            if not self.terminal_sent:
                outcome = Outcome.UPSTREAM_CUT
                # A read timeout mid-stream says so; anything else is a cut.
                self.exchange.error = upstream_timeout() if is_timeout(exc) else upstream_cut()
                yield self.surface.error_event(self.exchange.error.body()["error"])
        except (asyncio.CancelledError, GeneratorExit):
            if not self.terminal_sent:
                outcome = Outcome.CLIENT_DISCONNECTED
            raise
        finally:
            await self.upstream.aclose()
            self.exchange.response_body = self.assembler.result()
            self.exchange.stored_id = self.exchange.stored_id or self.assembler.object_id
            self.exchange.finish(outcome=outcome)

    async def _relay(self) -> AsyncIterator[bytes]:
        pending = b""
        async for chunk in self.upstream.aiter_raw():
            self.exchange.mark_first_byte()
            pending += chunk
            complete, pending = self._split(pending)
            if complete:
                out = b"".join(self._event(event) for event in complete)
                if out:
                    yield out
        if pending.strip():
            yield self._event(pending)

    @staticmethod
    def _split(buffer: bytes) -> tuple[list[bytes], bytes]:
        events = []
        start = 0
        for match in EVENT_END.finditer(buffer):
            events.append(buffer[start : match.end()])
            start = match.end()
        return events, buffer[start:]

    def _event(self, event: bytes) -> bytes:
        data = parse_data(event)
        if data is None:
            return event
        if data == DONE:
            return self._terminal() + event
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(payload, dict):
            return event
        prefix = self._terminal() if self.surface.is_terminal(payload) else b""
        if self.rewriter is None:
            self.assembler.add(payload)
            return prefix + event
        events = self.rewriter.on_event(payload)
        for out in events:
            self.assembler.add(out)
        if len(events) == 1 and events[0] is payload:
            return prefix + event  # unchanged: the upstream's own bytes
        return prefix + b"".join(self.surface.frame(out) for out in events)

    def _terminal(self) -> bytes:
        """Marks the stream complete; text a redaction still held goes out just before the terminal event."""
        if self.saw_terminal:
            return b""
        self.saw_terminal = True
        if self.rewriter is None:
            return b""
        events = self.rewriter.flush()
        for event in events:
            self.assembler.add(event)
        return b"".join(self.surface.frame(event) for event in events)


class BinaryRelay:
    """Relays a non-JSON body (audio, files) chunk by chunk; the audit keeps its size and digest."""

    def __init__(self, upstream: UpstreamResponse, exchange: Exchange) -> None:
        self.upstream = upstream
        self.exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        digest = hashlib.sha256()
        size = 0
        outcome = None
        try:
            async for chunk in self.upstream.aiter_raw():
                self.exchange.mark_first_byte()
                digest.update(chunk)
                size += len(chunk)
                yield chunk
        except UPSTREAM_ERRORS as exc:
            # Headers are gone already and a binary body has no room for an error: end it short.
            outcome = Outcome.UPSTREAM_CUT
            self.exchange.error = upstream_timeout() if is_timeout(exc) else upstream_cut()
        except (asyncio.CancelledError, GeneratorExit):
            outcome = Outcome.CLIENT_DISCONNECTED
            raise
        finally:
            await self.upstream.aclose()
            self.exchange.response_body = {
                "content_type": self.exchange.response_content_type,
                "size": size,
                "sha256": digest.hexdigest(),
            }
            self.exchange.finish(outcome=outcome)
