"""OpenAI's Responses API: `instructions` and `input` in, `output` items out, events ending in response.completed."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from policies.surfaces.base import Redact, Surface, TextHold, is_system_item, named_event_frame, part_texts

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
# The policy's chat-era names for the output cap.
RENAMED_PARAMS = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}
# What a policy may set here: the API refuses parameters it does not know (chat's seed, stop, n...).
ACCEPTED_PARAMS = frozenset(
    {
        "background",
        "include",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "parallel_tool_calls",
        "prompt_cache_key",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)


class Responses(Surface):
    name = group = "responses"
    names_model = has_system_prompt = takes_params = sets_user = streams_text = renames_params = True
    token_limit_params = ("max_output_tokens",)
    stores_objects = True

    def request_texts(self, body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        if isinstance(body.get("instructions"), str):
            yield "instructions", body["instructions"]
        value = body.get("input")
        for item in value if isinstance(value, list) else (value,):
            if not isinstance(item, dict):
                yield from (("input", text) for text in part_texts(item))
                continue
            # A message's content; a tool's result (function_call_output); a replayed call's arguments.
            for key in ("content", "output", "arguments"):
                yield from (("input", text) for text in part_texts(item.get(key)))

    def add_system_context(self, body: dict[str, Any], text: str, mode: str) -> bool:
        instructions = body.get("instructions")
        has_instructions = isinstance(instructions, str) and bool(instructions.strip())
        items = body.get("input")
        system_items = isinstance(items, list) and any(is_system_item(item) for item in items)
        if mode == "if_missing":
            if has_instructions or system_items:
                return False
            body["instructions"] = text
        elif mode == "prepend":
            body["instructions"] = f"{text}\n\n{instructions}" if has_instructions else text
        else:  # replace: the client's instructions and its system/developer items go
            body["instructions"] = text
            if system_items:
                body["input"] = [item for item in items if not is_system_item(item)]
        return True

    def param(self, name: str, value: Any) -> tuple[str, Any] | None:
        name = RENAMED_PARAMS.get(name, name)
        return (name, value) if name in ACCEPTED_PARAMS else None

    def set_user(self, body: dict[str, Any], value: str, *, override: bool) -> bool:
        # `user` is what LiteLLM reads; `safety_identifier` is OpenAI's newer name for the same person.
        if not override and (body.get("user") is not None or body.get("safety_identifier") is not None):
            return False
        changed = super().set_user(body, value, override=override)
        if override and body.get("safety_identifier") not in (None, value):
            body["safety_identifier"] = value
            changed = True
        return changed

    def referenced_objects(self, body: Any) -> Iterator[tuple[str, str]]:
        previous = body.get("previous_response_id") if isinstance(body, dict) else None
        if isinstance(previous, str) and previous:
            yield "previous_response_id", previous

    def redact_response(self, body: dict[str, Any], redact: Redact) -> dict[str, Any]:
        return redact_response_object(body, redact)

    def stored_id(self, body: Any) -> str | None:
        response_id = body.get("id") if isinstance(body, dict) else None
        return response_id if isinstance(response_id, str) and response_id else None

    # --- streams: a channel per (item, content part); the .done events carry the whole text again

    frame = staticmethod(named_event_frame)

    def is_terminal(self, event: dict[str, Any]) -> bool:
        return event.get("type") in TERMINAL_EVENTS

    def error_event(self, error: dict[str, Any]) -> bytes:
        # The event's type is "error"; the error object's own type (upstream_error...) has no field here.
        return named_event_frame({**error, "type": "error"})

    def rewrite_event(self, event: dict[str, Any], hold: TextHold) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "response.output_text.delta":
            delta = event.get("delta")
            if not isinstance(delta, str):
                return [event]
            released = hold.release(_channel(event), delta, final=False)
            return [event] if released == delta else [{**event, "delta": released}]
        if kind == "response.output_text.done":
            rest = hold.release(_channel(event), "", final=True)
            done = _with_redacted(event, "text", hold.redact)
            return [_delta_event(_channel(event), rest, event), done] if rest else [done]
        if kind == "response.content_part.done" and isinstance(event.get("part"), dict):
            return [_replaced(event, "part", _redact_part(event["part"], hold.redact))]
        if kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            return [_replaced(event, "item", _redact_item(event["item"], hold.redact))]
        if kind in TERMINAL_EVENTS:
            response = event.get("response")
            if isinstance(response, dict):
                return [_replaced(event, "response", redact_response_object(response, hold.redact))]
        return [event]

    def released_events(self, released: dict[Hashable, str], last: dict[str, Any]) -> list[dict[str, Any]]:
        return [_delta_event(channel, text, last) for channel, text in released.items()]

    def assembler(self) -> ResponsesAssembler:
        return ResponsesAssembler()


class ResponseObject(Responses):
    """A stored response read, deleted or cancelled by id: no request to govern, an answer to redact."""

    name = "responses_object"
    # Only a create makes a response the caller's.
    names_model = has_system_prompt = takes_params = sets_user = stores_objects = False


def _channel(event: dict[str, Any]) -> tuple[Any, Any, Any]:
    return event.get("item_id"), event.get("output_index"), event.get("content_index")


def _delta_event(channel: Any, text: str, near: dict[str, Any]) -> dict[str, Any]:
    item_id, output_index, content_index = channel
    return {
        "type": "response.output_text.delta",
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
        "delta": text,
        "logprobs": [],
        # Clients order by arrival; the number of the event it precedes keeps the sequence non-decreasing.
        "sequence_number": near.get("sequence_number"),
    }


def _replaced(container: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return container if value is container.get(key) else {**container, key: value}


def _with_redacted(container: dict[str, Any], key: str, redact: Redact) -> dict[str, Any]:
    text = container.get(key)
    if not isinstance(text, str):
        return container
    redacted = redact(text)
    return container if redacted == text else {**container, key: redacted}


def _redact_part(part: dict[str, Any], redact: Redact) -> dict[str, Any]:
    return _with_redacted(part, "text", redact) if part.get("type") == "output_text" else part


def _redact_item(item: Any, redact: Redact) -> Any:
    content = item.get("content") if isinstance(item, dict) and item.get("type") == "message" else None
    if not isinstance(content, list):
        return item
    parts = [_redact_part(part, redact) if isinstance(part, dict) else part for part in content]
    if all(new is old for new, old in zip(parts, content, strict=True)):
        return item
    return {**item, "content": parts}


def redact_response_object(body: dict[str, Any], redact: Redact) -> dict[str, Any]:
    """A Response with the text of its output messages (and the SDKs' output_text) redacted."""
    out = _with_redacted(body, "output_text", redact)
    output = body.get("output")
    if not isinstance(output, list):
        return out
    items = [_redact_item(item, redact) for item in output]
    if all(new is old for new, old in zip(items, output, strict=True)):
        return out
    return {**out, "output": items}


class ResponsesAssembler:
    """The final Response of a stream: the one in its terminal event, or rebuilt from the deltas if it was cut."""

    def __init__(self) -> None:
        self.response: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.items: dict[int, dict[str, Any]] = {}
        self.texts: dict[tuple[int, int], list[str]] = {}
        self.arguments: dict[int, list[str]] = {}
        self.error: dict[str, Any] | None = None

    @property
    def object_id(self) -> str | None:
        response_id = (self.final or self.response).get("id")
        return response_id if isinstance(response_id, str) else None

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        index = event.get("output_index")
        if kind in TERMINAL_EVENTS and isinstance(event.get("response"), dict):
            self.final = event["response"]
        elif kind in ("response.created", "response.in_progress") and isinstance(event.get("response"), dict):
            self.response = event["response"]
        elif kind in ("response.output_item.added", "response.output_item.done") and isinstance(index, int):
            if isinstance(event.get("item"), dict):
                self.items[index] = event["item"]
        elif kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            self.texts.setdefault((index, event.get("content_index")), []).append(event["delta"])
        elif kind == "response.function_call_arguments.delta" and isinstance(event.get("delta"), str):
            self.arguments.setdefault(index, []).append(event["delta"])
        elif kind == "error":
            self.error = {k: event.get(k) for k in ("type", "code", "message", "param")}
        elif "error" in event and isinstance(event["error"], dict):  # an error in chat's shape
            self.error = event["error"]

    def result(self) -> dict[str, Any]:
        body = dict(self.final) if self.final is not None else self._rebuilt()
        if self.error:
            body["error"] = self.error
        return body

    def _rebuilt(self) -> dict[str, Any]:
        body = {"object": "response", **self.response}
        body["output"] = [self._item(index, item) for index, item in sorted(self.items.items())]
        return body

    def _item(self, index: int, item: dict[str, Any]) -> dict[str, Any]:
        if item.get("status") == "completed":
            return item  # its .done event carried it whole
        if item.get("type") == "message":
            parts = sorted((c, "".join(t)) for (i, c), t in self.texts.items() if i == index and isinstance(c, int))
            return {**item, "content": [{"type": "output_text", "text": text, "annotations": []} for _, text in parts]}
        if item.get("type") == "function_call" and index in self.arguments:
            return {**item, "arguments": "".join(self.arguments[index])}
        return item
