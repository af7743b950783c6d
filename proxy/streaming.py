"""SSE relay: each event goes to the client as it arrives, and is collected for the audit record."""

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

import orjson
from django.conf import settings

from policies.streams import StreamRewriter
from policies.surfaces import Surface
from proxy.errors import upstream_bad_response, upstream_cut, upstream_timeout
from proxy.exchange import Exchange, Outcome
from proxy.upstream import UPSTREAM_ERRORS, UpstreamResponse, is_timeout, without_upstream_key

EVENT_END = re.compile(rb"\r?\n\r?\n")
DONE = b"[DONE]"
# What an event of an unexpected shape makes the adapters' dict walking raise.
ASSEMBLY_ERRORS = (AttributeError, TypeError, KeyError, ValueError, IndexError)


class OversizedEvent(Exception):
    """One SSE event grew past STREAM_EVENT_MAX_BYTES: the stream is ended, not buffered further."""


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
        # What the record keeps is capped as it is assembled: an endless stream costs bounded memory.
        self.assembled_budget = settings.AUDIT_MAX_BODY_BYTES
        self.unparsed = 0  # events relayed as sent whose content could not be understood

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
        except OversizedEvent:
            outcome = Outcome.UPSTREAM_ERROR
            self.exchange.error = upstream_bad_response(
                f"one stream event is larger than {settings.STREAM_EVENT_MAX_BYTES} bytes"
            )
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
            self.exchange.response_body = self._assembled()
            self.exchange.stored_id = self.exchange.stored_id or self.assembler.object_id
            self.exchange.finish(outcome=outcome)

    def _assembled(self) -> dict:
        try:
            body = self.assembler.result()
        except ASSEMBLY_ERRORS:
            body = {}
        if self.unparsed:
            body = {**body, "aiproxy_unparsed_events": self.unparsed}
        return body

    async def _relay(self) -> AsyncIterator[bytes]:
        pending = bytearray()
        limit = settings.STREAM_EVENT_MAX_BYTES
        async for chunk in self.upstream.aiter_raw():
            self.exchange.mark_first_byte()
            # Only the new bytes (and the 3 before them, a separator may straddle) are searched: linear.
            scan_from = max(len(pending) - 3, 0)
            pending += chunk
            complete = self._split(pending, scan_from)
            if len(pending) > limit:
                raise OversizedEvent
            if complete:
                out = b"".join(self._event(event) for event in complete)
                if out:
                    yield without_upstream_key(out)
        if pending.strip():
            yield self._event(bytes(pending))

    @staticmethod
    def _split(buffer: bytearray, scan_from: int) -> list[bytes]:
        """The complete events at the start of buffer, removed from it."""
        events = []
        start = 0
        for match in EVENT_END.finditer(buffer, scan_from):
            events.append(bytes(buffer[start : match.end()]))
            start = match.end()
        if start:
            del buffer[:start]
        return events

    def _event(self, event: bytes) -> bytes:
        data = parse_data(event)
        if data is None:
            return event
        if data == DONE:
            return self._terminal() + event
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            self.unparsed += 1
            return event
        prefix = self._terminal() if self.surface.is_terminal(payload) else b""
        if self.exchange.hide_stream_usage and self.surface.is_usage_only(payload):
            self._assemble([payload], len(data))  # for the record and the key's limits, not for the client
            return prefix
        try:
            events = [payload] if self.rewriter is None else self.rewriter.on_event(payload)
        except ASSEMBLY_ERRORS:
            # A shape no adapter expects carries no text we know how to find: relayed as sent, counted.
            self.unparsed += 1
            return prefix + event
        self._assemble(events, len(data))
        if len(events) == 1 and events[0] is payload:
            return prefix + event  # unchanged: the upstream's own bytes
        return prefix + b"".join(self.surface.frame(out) for out in events)

    def _assemble(self, events: list[dict], size: int) -> None:
        if self.assembled_budget < 0:
            return
        self.assembled_budget -= size
        if self.assembled_budget < 0:
            self.exchange.response_truncated = True
            return
        for event in events:
            try:
                self.assembler.add(event)
            except ASSEMBLY_ERRORS:
                self.unparsed += 1

    def _terminal(self) -> bytes:
        """Marks the stream complete; text a redaction still held goes out just before the terminal event."""
        if self.saw_terminal:
            return b""
        self.saw_terminal = True
        if self.rewriter is None:
            return b""
        events = self.rewriter.flush()
        self._assemble(events, sum(len(e) for e in events))
        return b"".join(self.surface.frame(event) for event in events)


class BinaryRelay:
    """Relays a body as it is, chunk by chunk (audio, files, a JSON answer too large to rewrite).

    The audit keeps its size and digest. `prefix` is what was already read of it.
    """

    def __init__(self, upstream: UpstreamResponse, exchange: Exchange, prefix: bytes = b"") -> None:
        self.upstream = upstream
        self.exchange = exchange
        self.prefix = prefix

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self.prefix:
            yield self.prefix
        async for chunk in self.upstream.aiter_raw():
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        digest = hashlib.sha256()
        size = 0
        outcome = None
        try:
            async for chunk in self._chunks():
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
