"""SSE relay: each event goes to the client as it arrives, and is collected for the audit record."""

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

import orjson

from policies.streams import StreamRewriter
from proxy.errors import upstream_cut, upstream_timeout
from proxy.exchange import Exchange, Outcome
from proxy.upstream import UPSTREAM_ERRORS, UpstreamResponse, is_timeout

EVENT_END = re.compile(rb"\r?\n\r?\n")
DONE = b"[DONE]"


def parse_data(event: bytes) -> bytes | None:
    """The payload of an event's data lines (joined), or None for comments and keep-alives."""
    data = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


class StreamAssembler:
    """Rebuilds a whole chat.completion / text_completion from its chunks."""

    def __init__(self) -> None:
        self.meta: dict = {}
        self.choices: dict[int, dict] = {}
        self.usage: dict | None = None
        self.error: dict | None = None

    def add(self, chunk: dict) -> None:
        if "error" in chunk:
            self.error = chunk["error"]
            return
        if not self.meta:
            self.meta = {k: chunk[k] for k in ("id", "model", "created", "system_fingerprint") if k in chunk}
            self.meta["object"] = chunk.get("object", "")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            self._add_choice(choice)

    def _add_choice(self, delta_choice: dict) -> None:
        choice = self.choices.setdefault(delta_choice.get("index", 0), {"content": [], "tool_calls": {}})
        if delta_choice.get("finish_reason"):
            choice["finish_reason"] = delta_choice["finish_reason"]
        if "text" in delta_choice:  # completions
            choice["content"].append(delta_choice["text"] or "")
        delta = delta_choice.get("delta") or {}
        if delta.get("role"):
            choice["role"] = delta["role"]
        if delta.get("content"):
            choice["content"].append(delta["content"])
        for call in delta.get("tool_calls") or ():
            self._add_tool_call(choice["tool_calls"], call)

    @staticmethod
    def _add_tool_call(calls: dict, delta: dict) -> None:
        call = calls.setdefault(
            delta.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if delta.get("id"):
            call["id"] = delta["id"]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""

    def result(self) -> dict:
        is_chat = self.meta.get("object", "").startswith("chat")
        choices = [self._choice(index, choice, is_chat) for index, choice in sorted(self.choices.items())]
        body = {**self.meta, "object": "chat.completion" if is_chat else "text_completion", "choices": choices}
        if self.usage:
            body["usage"] = self.usage
        if self.error:
            body["error"] = self.error
        return body

    @staticmethod
    def _choice(index: int, choice: dict, is_chat: bool) -> dict:
        text = "".join(choice["content"])
        result = {"index": index, "finish_reason": choice.get("finish_reason")}
        if not is_chat:
            return {**result, "text": text}
        message = {"role": choice.get("role", "assistant"), "content": text}
        if choice["tool_calls"]:
            message["tool_calls"] = [call for _, call in sorted(choice["tool_calls"].items())]
        return {**result, "message": message}


class SseRelay:
    """An async iterator over the client's SSE bytes, fed from the open upstream response."""

    def __init__(self, upstream: UpstreamResponse, exchange: Exchange, rewriter: StreamRewriter | None) -> None:
        self.upstream = upstream
        self.exchange = exchange
        self.rewriter = rewriter
        self.assembler = StreamAssembler()
        self.saw_done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        outcome = None
        try:
            async for out in self._relay():
                yield out
            if not self.saw_done:
                outcome = Outcome.UPSTREAM_CUT
                self.exchange.error = upstream_cut()
                yield self.exchange.error.sse_event()
        except UPSTREAM_ERRORS as exc:
            outcome = Outcome.UPSTREAM_CUT
            # A read timeout mid-stream says so; anything else is a cut.
            self.exchange.error = upstream_timeout() if is_timeout(exc) else upstream_cut()
            yield self.exchange.error.sse_event()
        except (asyncio.CancelledError, GeneratorExit):
            outcome = Outcome.CLIENT_DISCONNECTED
            raise
        finally:
            await self.upstream.aclose()
            self.exchange.response_body = self.assembler.result()
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

    def _flush_held_text(self) -> bytes:
        """Text a redaction held back, for streams whose last chunk had no finish_reason."""
        if self.rewriter is None:
            return b""
        events = self.rewriter.flush()
        for event in events:
            self.assembler.add(event)
        return b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events)

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
            self.saw_done = True
            return self._flush_held_text() + event
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if self.rewriter is not None:
            chunk = self.rewriter.on_event(chunk)
            if chunk is None:
                return b""
            event = b"data: " + orjson.dumps(chunk) + b"\n\n"
        self.assembler.add(chunk)
        return event


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
