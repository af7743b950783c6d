"""Anthropic's Messages API: `system` and `messages` in, content blocks out, named events ending in message_stop."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import orjson

from policies.surfaces.base import Redact, Surface, TextHold, named_event_frame, part_texts

RENAMED_PARAMS = {"max_completion_tokens": "max_tokens", "stop": "stop_sequences"}
# Anthropic refuses fields it does not know: only these of a policy's parameters are sent.
ACCEPTED_PARAMS = frozenset(
    {
        "max_tokens",
        "metadata",
        "service_tier",
        "stop_sequences",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
    }
)


class Messages(Surface):
    name = group = "messages"
    names_model = has_system_prompt = takes_params = sets_user = streams_text = renames_params = True
    token_limit_params = ("max_tokens",)

    def request_texts(self, body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        yield from (("system", text) for text in part_texts(body.get("system")))
        messages = body.get("messages")
        for message in messages if isinstance(messages, list) else ():
            content = message.get("content") if isinstance(message, dict) else None
            for block in content if isinstance(content, list) else (content,):
                yield from (("messages", text) for text in _block_texts(block))

    def add_system_context(self, body: dict[str, Any], text: str, mode: str) -> bool:
        system = body.get("system")
        has_system = any(t.strip() for t in part_texts(system))
        if mode == "if_missing" and has_system:
            return False
        if mode == "prepend" and has_system:
            if isinstance(system, str):
                body["system"] = f"{text}\n\n{system}"
            else:
                body["system"] = [{"type": "text", "text": text}, *system]
            return True
        body["system"] = text
        return True

    def param(self, name: str, value: Any) -> tuple[str, Any] | None:
        name = RENAMED_PARAMS.get(name, name)
        if name == "stop_sequences" and isinstance(value, str):
            value = [value]
        return (name, value) if name in ACCEPTED_PARAMS else None

    def set_user(self, body: dict[str, Any], value: str, *, override: bool) -> bool:
        metadata = body.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        current = metadata.get("user_id")
        if (current is not None and not override) or current == value:
            return False
        body["metadata"] = {**metadata, "user_id": value}
        return True

    def redact_response(self, body: dict[str, Any], redact: Redact) -> dict[str, Any]:
        content = body.get("content")
        if not isinstance(content, list):
            return body
        blocks = [_redact_block(block, redact) for block in content]
        if all(new is old for new, old in zip(blocks, content, strict=True)):
            return body
        return {**body, "content": blocks}

    def error_body(self, error: dict[str, Any]) -> dict[str, Any]:
        # Anthropic's envelope around OpenAI's error object: both SDKs read their message from it.
        return {"type": "error", "error": error}

    # --- streams: a channel per content block; content_block_stop releases what the block held

    frame = staticmethod(named_event_frame)

    def is_terminal(self, event: dict[str, Any]) -> bool:
        return event.get("type") == "message_stop"

    def error_event(self, error: dict[str, Any]) -> bytes:
        return named_event_frame(self.error_body(error))

    def rewrite_event(self, event: dict[str, Any], hold: TextHold) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            text = delta.get("text") if isinstance(delta, dict) and delta.get("type") == "text_delta" else None
            if not isinstance(text, str):
                return [event]
            released = hold.release(event.get("index"), text, final=False)
            return [event] if released == text else [{**event, "delta": {**delta, "text": released}}]
        if kind == "content_block_stop":
            rest = hold.release(event.get("index"), "", final=True)
            return [_text_delta(event.get("index"), rest), event] if rest else [event]
        return [event]

    def released_events(self, released: dict[Hashable, str], last: dict[str, Any]) -> list[dict[str, Any]]:
        return [_text_delta(index, text) for index, text in released.items()]

    def assembler(self) -> MessagesAssembler:
        return MessagesAssembler()


class CountTokens(Messages):
    """POST /v1/messages/count_tokens: the same model, system prompt and text rules; no generation parameters."""

    name = "messages_count_tokens"
    takes_params = sets_user = streams_text = False


def _block_texts(block: Any) -> Iterator[str]:
    yield from part_texts(block if isinstance(block, str) else [block])
    if isinstance(block, dict) and block.get("type") == "tool_result":
        yield from part_texts(block.get("content"))
    elif isinstance(block, dict) and block.get("type") == "tool_use" and block.get("input") is not None:
        # A replayed call's input reaches the model as the client wrote it, as chat's arguments do.
        yield orjson.dumps(block["input"]).decode()


def _redact_block(block: Any, redact: Redact) -> Any:
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        return block
    redacted = redact(block["text"])
    return block if redacted == block["text"] else {**block, "text": redacted}


def _text_delta(index: Any, text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}


class MessagesAssembler:
    """The whole Message of a stream: its blocks (text, tool_use with its input parsed), stop reason and usage."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.pieces: dict[int, list[str]] = {}
        self.delta: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}
        self.error: dict[str, Any] | None = None

    @property
    def object_id(self) -> str | None:
        return None

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        index = event.get("index")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            self.message = event["message"]
            self._usage(self.message.get("usage"))
        elif kind == "content_block_start" and isinstance(index, int) and isinstance(event.get("content_block"), dict):
            self.blocks[index] = event["content_block"]
        elif kind == "content_block_delta" and isinstance(index, int) and isinstance(event.get("delta"), dict):
            delta = event["delta"]
            piece = delta.get("text", delta.get("partial_json", delta.get("thinking")))
            if isinstance(piece, str):
                self.pieces.setdefault(index, []).append(piece)
        elif kind == "message_delta":
            if isinstance(event.get("delta"), dict):
                self.delta.update(event["delta"])
            self._usage(event.get("usage"))
        elif kind == "error" or "error" in event:
            error = event.get("error")
            self.error = error if isinstance(error, dict) else {"message": str(error)}

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage.update({k: v for k, v in usage.items() if v is not None})

    def result(self) -> dict[str, Any]:
        body = {"type": "message", "role": "assistant", **self.message, **self.delta}
        body["content"] = [self._block(index, block) for index, block in sorted(self.blocks.items())]
        if self.usage:
            body["usage"] = self.usage
        if self.error:
            body["error"] = self.error
        return body

    def _block(self, index: int, block: dict[str, Any]) -> dict[str, Any]:
        joined = "".join(self.pieces.get(index, ()))
        kind = block.get("type")
        if kind == "text":
            return {**block, "text": block.get("text", "") + joined}
        if kind == "thinking":
            return {**block, "thinking": block.get("thinking", "") + joined}
        if kind in ("tool_use", "server_tool_use") and joined:
            try:
                return {**block, "input": orjson.loads(joined)}
            except orjson.JSONDecodeError:
                return {**block, "input": None, "partial_json": joined}  # a cut stream's half-sent input
        return block
