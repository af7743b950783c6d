"""Chat completions (and the older completions): messages or a prompt in, choices out, `data: [DONE]` at the end."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from policies.surfaces.base import Redact, Surface, TextHold, is_system_item, part_texts


class Chat(Surface):
    name = group = "chat"
    names_model = has_system_prompt = takes_params = sets_user = streams_text = True
    token_limit_params = ("max_tokens", "max_completion_tokens")

    def request_texts(self, body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        messages = body.get("messages")
        # Only the shapes OpenAI defines are walked: a client cannot make us recurse deeply.
        for message in messages if isinstance(messages, list) else (messages,):
            if not isinstance(message, dict):
                yield from (("messages", text) for text in part_texts(message))
                continue
            for text in part_texts(message.get("content")):
                yield "messages", text
            if isinstance(message.get("name"), str):  # the model reads a participant's name too
                yield "messages", message["name"]
            calls = message.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    yield "messages", function["arguments"]

    def add_system_context(self, body: dict[str, Any], text: str, mode: str) -> bool:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return False
        ours = {"role": "system", "content": text}
        if mode == "if_missing":
            if any(is_system_item(m) for m in messages):
                return False
            body["messages"] = [ours, *messages]
        elif mode == "prepend":
            body["messages"] = [ours, *messages]
        else:  # replace
            body["messages"] = [ours, *(m for m in messages if not is_system_item(m))]
        return True

    def redact_response(self, body: dict[str, Any], redact: Redact) -> dict[str, Any]:
        choices = body.get("choices")
        if not isinstance(choices, list):
            return body
        new_choices = [self._redact_choice(choice, redact) for choice in choices]
        if all(new is old for new, old in zip(new_choices, choices, strict=True)):
            return body
        return {**body, "choices": new_choices}

    def _redact_choice(self, choice: Any, redact: Redact) -> Any:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return choice
        redacted = redact(message["content"])
        if redacted == message["content"]:
            return choice
        return {**choice, "message": {**message, "content": redacted}}

    # --- streams: one channel per choice index; a choice's finish_reason releases what it held

    def rewrite_event(self, event: dict[str, Any], hold: TextHold) -> list[dict[str, Any]]:
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices:
            return [event]
        new_choices = [self._rewrite_choice(choice, hold) for choice in choices]
        if all(new is old for new, old in zip(new_choices, choices, strict=True)):
            return [event]
        return [{**event, "choices": new_choices}]

    def _rewrite_choice(self, choice: Any, hold: TextHold) -> Any:
        if not isinstance(choice, dict):
            return choice
        holder = self._text_holder(choice)
        text = holder.get(self._text_key) if isinstance(holder, dict) else None
        finished = choice.get("finish_reason") is not None
        if not isinstance(text, str) and not finished:
            return choice
        released = hold.release(choice.get("index", 0), text if isinstance(text, str) else "", final=finished)
        if released == text or (text is None and not released):
            return choice
        return self._with_text(choice, released)

    _text_key = "content"
    assembles_chat = True  # a stream reassembles into a chat.completion (completions: a text_completion)

    def _text_holder(self, choice: dict[str, Any]) -> Any:
        return choice.get("delta")

    def _with_text(self, choice: dict[str, Any], text: str) -> dict[str, Any]:
        return {**choice, "delta": {**(choice.get("delta") or {}), "content": text}}

    def released_events(self, released: dict[Hashable, str], last: dict[str, Any]) -> list[dict[str, Any]]:
        meta = {k: last[k] for k in ("id", "object", "created", "model") if k in last}
        return [{**meta, "choices": [self._synthetic_choice(index, text)]} for index, text in released.items()]

    def _synthetic_choice(self, index: Any, text: str) -> dict[str, Any]:
        return {"index": index, "delta": {"content": text}, "finish_reason": None}

    def assembler(self) -> ChatAssembler:
        return ChatAssembler(is_chat=self.assembles_chat)

    def with_stream_usage(self, body: dict[str, Any]) -> dict[str, Any] | None:
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return None
        return {**body, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}

    def is_usage_only(self, event: dict[str, Any]) -> bool:
        return event.get("choices") == [] and isinstance(event.get("usage"), dict)


class Completions(Chat):
    name = group = "completions"
    token_limit_params = ("max_tokens", "max_completion_tokens")
    _text_key = "text"
    assembles_chat = False

    def request_texts(self, body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        return (("prompt", text) for text in part_texts(body.get("prompt")))

    def add_system_context(self, body: dict[str, Any], text: str, mode: str) -> bool:
        # A prompt has no system message to look for or replace: every mode prefixes it.
        # Token-id prompts are left alone: we cannot tokenize the context for the model.
        prompt = body.get("prompt")
        prefix = text + "\n\n"
        if isinstance(prompt, str):
            body["prompt"] = prefix + prompt
            return True
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            body["prompt"] = [prefix + p for p in prompt]
            return True
        return False

    def _redact_choice(self, choice: Any, redact: Redact) -> Any:
        text = choice.get("text") if isinstance(choice, dict) else None
        if not isinstance(text, str):
            return choice
        redacted = redact(text)
        return choice if redacted == text else {**choice, "text": redacted}

    def _text_holder(self, choice: dict[str, Any]) -> Any:
        return choice

    def _with_text(self, choice: dict[str, Any], text: str) -> dict[str, Any]:
        return {**choice, "text": text}

    def _synthetic_choice(self, index: Any, text: str) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": None}


class ChatAssembler:
    """Rebuilds a whole chat.completion / text_completion from its chunks."""

    def __init__(self, *, is_chat: bool = True) -> None:
        self.is_chat = is_chat
        self.meta: dict = {}
        self.choices: dict[int, dict] = {}
        self.usage: dict | None = None
        self.error: dict | None = None

    @property
    def object_id(self) -> str | None:
        return None

    def add(self, chunk: dict) -> None:
        # Upstream output is untrusted: each part is taken only in the shape the API defines.
        if "error" in chunk:
            self.error = chunk["error"]
            return
        if not self.meta:
            self.meta = {k: chunk[k] for k in ("id", "model", "created", "system_fingerprint") if k in chunk}
            self.meta["object"] = chunk.get("object") if isinstance(chunk.get("object"), str) else ""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and isinstance(choice.get("index", 0), int):
                self._add_choice(choice)

    def _add_choice(self, delta_choice: dict) -> None:
        choice = self.choices.setdefault(delta_choice.get("index", 0), {"content": [], "tool_calls": {}})
        if isinstance(delta_choice.get("finish_reason"), str):
            choice["finish_reason"] = delta_choice["finish_reason"]
        if isinstance(delta_choice.get("text"), str):  # completions
            choice["content"].append(delta_choice["text"])
        delta = delta_choice.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("role"), str):
            choice["role"] = delta["role"]
        if isinstance(delta.get("content"), str):
            choice["content"].append(delta["content"])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict) and isinstance(call.get("index", 0), int):
                self._add_tool_call(choice["tool_calls"], call)

    @staticmethod
    def _add_tool_call(calls: dict, delta: dict) -> None:
        call = calls.setdefault(
            delta.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if isinstance(delta.get("id"), str):
            call["id"] = delta["id"]
        function = delta.get("function") if isinstance(delta.get("function"), dict) else {}
        for field in ("name", "arguments"):
            if isinstance(function.get(field), str):
                call["function"][field] += function[field]

    def result(self) -> dict:
        is_chat = self.is_chat
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
