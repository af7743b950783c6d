"""The fake upstream's Responses API and Anthropic Messages routes, in their real wire shapes.

Kept apart from fake_upstream.py's chat routes; the same controls apply (x-fake-content, x-fake-chunks,
x-fake-cut-after counts events), plus x-fake-tool-call: {"name": ..., "arguments": "<json>"}, which
adds a function call (Responses) or a tool_use block (Messages) after the text.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from typing import Any

import orjson

_ids = itertools.count(1)
STORE_MAX = 10_000


def new_id(prefix: str) -> str:
    return f"{prefix}_fake{next(_ids):08x}"


def named_events(events: list[dict]) -> list[bytes]:
    """One SSE message per event, framed `event: <type>` as both APIs do; no `[DONE]` after them."""
    return [b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events]


def split_in_two(text: str) -> list[str]:
    middle = max(1, len(text) // 2)
    return [text[:middle], text[middle:]]


# --------------------------------------------------------------------------- #
# Responses API
# --------------------------------------------------------------------------- #


def input_items(value: Any) -> list[dict]:
    """`input` as the stored list of items: a string becomes one user message of input_text."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    items = []
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        prefix = "msg" if kind == "message" else "fco" if kind == "function_call_output" else "item"
        item = {"id": new_id(prefix), "type": kind, "status": "completed", **item}
        if isinstance(item.get("content"), str):
            item["content"] = [{"type": "input_text", "text": item["content"]}]
        items.append(item)
    return items


def input_text(body: dict) -> str:
    texts = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    for item in input_items(body.get("input")):
        texts += [
            p["text"] for p in item.get("content") or () if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        if isinstance(item.get("output"), str):
            texts.append(item["output"])
    return " ".join(texts)


def response_object(body: dict, output: list[dict], usage: dict, status: str = "completed") -> dict:
    return {
        "id": new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model") or "fake-model",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def responses_usage(input_tokens: int, output_tokens: int) -> dict:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    )
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def function_call_item(item_id: str, call_id: str, tool: dict, arguments: str, status: str = "completed") -> dict:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": tool["name"],
        "arguments": arguments,
    }


class ResponsesStore:
    """Created responses and their input items, bounded, for GET / DELETE / input_items / cancel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[dict, list[dict]]] = OrderedDict()

    def keep(self, response: dict, items: list[dict]) -> None:
        with self._lock:
            self._items[response["id"]] = (response, items)
            while len(self._items) > STORE_MAX:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> tuple[dict, list[dict]] | None:
        with self._lock:
            return self._items.get(response_id)

    def forget(self, response_id: str) -> bool:
        with self._lock:
            return self._items.pop(response_id, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def create_response(body: dict, text: str, pieces: list[str], tool: dict | None, count_words) -> tuple[dict, list]:
    """The finished Response and the stream events that lead to it."""
    message_id = new_id("msg")
    output = [message_item(message_id, text)]
    if tool is not None:
        output.append(function_call_item(new_id("fc"), new_id("call"), tool, tool["arguments"]))
    usage = responses_usage(count_words(input_text(body)), count_words(text))
    response = response_object(body, output, usage)
    return response, responses_events(response, message_id, pieces, tool)


def responses_events(response: dict, message_id: str, pieces: list[str], tool: dict | None) -> list[dict]:
    started = {**response, "status": "in_progress", "output": [], "usage": None}
    text = response["output"][0]["content"][0]["text"]
    events = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": message_item(message_id, "", "in_progress")},
        {
            "type": "response.content_part.added",
            "item_id": message_id,
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
        },
    ]
    where = {"item_id": message_id, "output_index": 0, "content_index": 0}
    events += [{"type": "response.output_text.delta", **where, "delta": p, "logprobs": []} for p in pieces]
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": response["output"][0]["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": response["output"][0]},
    ]
    if tool is not None:
        call = response["output"][1]
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": 1,
                "item": {**call, "arguments": "", "status": "in_progress"},
            }
        )
        events += [
            {"type": "response.function_call_arguments.delta", "item_id": call["id"], "output_index": 1, "delta": d}
            for d in split_in_two(call["arguments"])
        ]
        events.append(
            {
                "type": "response.function_call_arguments.done",
                "item_id": call["id"],
                "output_index": 1,
                "arguments": call["arguments"],
            }
        )
        events.append({"type": "response.output_item.done", "output_index": 1, "item": call})
    events.append({"type": "response.completed", "response": response})
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


# --------------------------------------------------------------------------- #
# Anthropic Messages
# --------------------------------------------------------------------------- #


def messages_input_text(body: dict) -> str:
    texts = []
    system = body.get("system")
    texts += [system] if isinstance(system, str) else [b.get("text", "") for b in system or () if isinstance(b, dict)]
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                texts.append(block["text"])
    return " ".join(texts)


def create_message(body: dict, text: str, pieces: list[str], tool: dict | None, count_words) -> tuple[dict, list]:
    """The finished Message and the stream events that lead to it."""
    content: list[dict] = [{"type": "text", "text": text}]
    if tool is not None:
        content.append(
            {"type": "tool_use", "id": new_id("toolu"), "name": tool["name"], "input": orjson.loads(tool["arguments"])}
        )
    message = {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or "fake-model",
        "content": content,
        "stop_reason": "tool_use" if tool is not None else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": count_words(messages_input_text(body)), "output_tokens": count_words(text)},
    }
    return message, messages_events(message, pieces, tool)


def messages_events(message: dict, pieces: list[str], tool: dict | None) -> list[dict]:
    started = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    events = [
        {"type": "message_start", "message": started},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}} for p in pieces]
    events.append({"type": "content_block_stop", "index": 0})
    if tool is not None:
        block = message["content"][1]
        events.append({"type": "content_block_start", "index": 1, "content_block": {**block, "input": {}}})
        events += [
            {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}}
            for part in split_in_two(tool["arguments"])
        ]
        events.append({"type": "content_block_stop", "index": 1})
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        },
        {"type": "message_stop"},
    ]
    return events


ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str) -> dict:
    kind = ANTHROPIC_ERRORS.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": new_id("req")}
