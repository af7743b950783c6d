"""A fast fake OpenAI-compatible upstream (stands in for a LiteLLM server).

Used by the test suite (``FakeUpstream`` runs it in a background thread) and by
benchmarks (``python tests/fake_upstream.py --port 9000 [--no-record]``).

It is a raw ASGI application on purpose: no framework, so a single uvicorn
process can answer many thousands of requests per second and the fake never
becomes the bottleneck of a benchmark.

Control headers (sent by the client, forwarded by the proxy under test):

* ``x-fake-status: 429``     -> that status (400-599) with an OpenAI-shaped error
                                body (Anthropic's ``{"type": "error", ...}`` on
                                /messages paths); 429 also sends ``retry-after: 1``
* ``x-fake-delay: 1.5``      -> sleep that many seconds before responding
* ``x-fake-interval: 0.05``  -> sleep that long between streamed body messages
* ``x-fake-cut-after: N``    -> on streamed responses, send N body messages
                                (SSE events / audio chunks), then drop the
                                connection without finishing the chunked body
* ``x-fake-content: text``   -> the completion text
* ``x-fake-chunks: ["a","b"]`` -> the streamed pieces (JSON list of strings)
* ``x-fake-tool-call: {"name": "f", "arguments": "{...}"}`` -> Responses answers add a
                                ``function_call`` output item, Messages answers a
                                ``tool_use`` block (stop_reason ``tool_use``), after the text
* ``x-fake-linger: 0.3``     -> on streamed responses, keep the body open that long
                                after the last event before ending it
* ``x-fake-echo-key: 1``     -> with x-fake-status, the error quotes the Authorization it got
* ``x-fake-security-headers: 1`` -> adds CSP, HSTS, CORS and Content-Disposition headers
* ``x-fake-redirect: /path`` -> 307, empty body, ``location`` = the fake's own
                                ``http://host:port`` + that path

Routes, served under ``/v1/...`` and also without the ``/v1`` prefix:

* ``POST /chat/completions``, ``POST /completions`` (``stream`` -> ``data:`` SSE ending
  with ``data: [DONE]``), ``POST /embeddings``, ``GET /models``, ``GET /models/{id}``,
  ``POST /moderations``, ``POST /images/generations``, ``POST /audio/speech``,
  ``POST /audio/transcriptions``, ``POST /audio/translations``
* OpenAI Responses API: ``POST /responses`` (``stream`` -> ``event: <type>`` SSE, no
  ``[DONE]``); created responses (unless ``store: false``) are kept per app instance,
  bounded, cleared by ``reset()``: ``GET /responses/{id}``, ``DELETE /responses/{id}``,
  ``GET /responses/{id}/input_items`` (``order``, ``limit``, ``after``),
  ``POST /responses/{id}/cancel``; an unknown id is a 404
* Anthropic Messages: ``POST /messages`` (``stream`` -> ``event: <type>`` SSE, no
  ``[DONE]``), ``POST /messages/count_tokens``

The Responses and Messages shapes and event sequences live in tests/fake_surfaces.py.
Any other method/path gets a 200 JSON echo of the request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import logging
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn

try:
    from tests import fake_surfaces
    from tests.servers import ServerThread
except ModuleNotFoundError:  # run as a script: python tests/fake_upstream.py
    import fake_surfaces
    from servers import ServerThread

DEFAULT_CONTENT = "Hello from fake upstream"
MODEL_IDS = ("gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "text-embedding-3-small", "fake-model")
MODEL_CREATED = 1_700_000_000
EMBEDDING_DIMENSIONS = 8
SPEECH_CHUNK_COUNT = 4
SPEECH_CHUNK_SIZE = 16 * 1024
MODERATION_FLAG_MARKER = "fake-flag"  # inputs containing it come back flagged

JSON_TYPE = b"application/json"
SSE_TYPE = b"text/event-stream"
# Sent on every response. ``connection: keep-alive`` is hop-by-hop on purpose:
# the proxy under test is expected not to forward it.
BASE_HEADERS = [
    (b"x-litellm-model-id", b"fake"),
    # What LiteLLM says about its internals: a gateway must not relay these by default.
    (b"x-litellm-model-api-base", b"http://10.11.12.13:4000"),
    (b"x-litellm-key-spend", b"0.0"),
    (b"x-ratelimit-remaining-requests", b"99"),
    (b"openai-processing-ms", b"7"),
    (b"connection", b"keep-alive"),
]


# Sent with x-fake-security-headers: the upstream's own security and CORS policy, which a gateway must not relay.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'"),
    (b"strict-transport-security", b"max-age=63072000"),
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-credentials", b"true"),
    (b"content-disposition", b"attachment; filename=answer.json"),
]


# --------------------------------------------------------------------------- #
# Data types
# --------------------------------------------------------------------------- #


@dataclass(slots=True)
class ReceivedRequest:
    """One request as the fake saw it (the same object is recorded)."""

    method: str
    path: str  # as received, e.g. "/v1/chat/completions"
    query: str  # raw query string, without "?"
    headers: dict[str, str]  # lowercased names
    body: bytes
    json: dict | None  # parsed body when it is a JSON object
    client_port: int | None = None  # which of the client's connections carried it


@dataclass(slots=True)
class Reply:
    """What a route handler returns; ``_send_reply`` turns it into ASGI messages."""

    body: bytes = b""  # sent in one message with content-length
    chunks: list[bytes] | None = None  # streamed: one ASGI body message each
    content_type: bytes = JSON_TYPE
    status: int = 200
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Controls:
    """The x-fake-* control headers of one request, parsed."""

    status: int | None = None
    delay: float = 0.0
    interval: float = 0.0
    cut_after: int | None = None
    content: str = DEFAULT_CONTENT
    chunks: list[str] = field(default_factory=list)
    tool_call: dict | None = None
    linger: float = 0.0
    redirect: str | None = None


class BadControlHeader(ValueError):
    """A control header could not be parsed; answered with a 400 error."""


class DeliberateCut(Exception):
    """Raised mid-stream so uvicorn drops the connection (x-fake-cut-after)."""


class _HideDeliberateCuts(logging.Filter):
    # uvicorn logs every exception escaping the app with a traceback; for the
    # cut mode that is expected behaviour, not an error worth printing.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DeliberateCut)


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDeliberateCuts) for f in logger.filters):
        logger.addFilter(_HideDeliberateCuts())


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #

_ids = itertools.count(1)
_WORD_PIECES = re.compile(r"\s*\S+")


def _new_id(prefix: str) -> str:
    return f"{prefix}-fake{next(_ids):08x}"


def _json(obj: Any, status: int = 200) -> Reply:
    return Reply(body=orjson.dumps(obj), status=status)


def _sse(events: list[Any]) -> Reply:
    chunks = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events]
    chunks.append(b"data: [DONE]\n\n")
    return Reply(chunks=chunks, content_type=SSE_TYPE)


def _count_words(text: str) -> int:
    return len(text.split())


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _messages_text(messages: Any) -> str:
    """All text of chat messages (string contents and text parts)."""
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return " ".join(parts)


def _as_inputs(value: Any) -> list[Any]:
    """OpenAI ``input``: a string, a list of strings, a token list or a list of token lists."""
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return value
    return [value]


def _utf8(value: str) -> str:
    # Header values arrive as latin-1; clients may have sent UTF-8 bytes.
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _normalize(path: str) -> str:
    """'/v1/chat/completions/' -> '/chat/completions' (routes live without /v1)."""
    if path == "/v1" or path.startswith("/v1/"):
        path = path[3:]
    return path.rstrip("/") or "/"


# --------------------------------------------------------------------------- #
# Control headers
# --------------------------------------------------------------------------- #


def _number(headers: dict[str, str], name: str, kind: Callable[[str], Any]) -> Any:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = kind(raw.strip())
    except ValueError:
        raise BadControlHeader(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if value < 0:
        raise BadControlHeader(f"{name} must not be negative, got {raw!r}")
    return value


def _parse_chunks(raw: str) -> list[str]:
    try:
        chunks = orjson.loads(_utf8(raw))
    except orjson.JSONDecodeError:
        chunks = None
    if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
        raise BadControlHeader(f"x-fake-chunks must be a JSON list of strings, got {raw!r}")
    return chunks


def _parse_tool_call(raw: str | None) -> dict | None:
    if raw is None:
        return None
    try:
        call = orjson.loads(raw)
        orjson.loads(call["arguments"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        call = None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise BadControlHeader(f'x-fake-tool-call must be {{"name": ..., "arguments": "<json>"}}, got {raw!r}')
    return call


def parse_controls(headers: dict[str, str]) -> Controls:
    status = _number(headers, "x-fake-status", int)
    if status is not None and not 400 <= status <= 599:
        raise BadControlHeader(f"x-fake-status must be between 400 and 599, got {status}")
    raw_content, raw_chunks = headers.get("x-fake-content"), headers.get("x-fake-chunks")
    chunks = _parse_chunks(raw_chunks) if raw_chunks is not None else None
    # Content and pieces stay consistent: either one defaults to the other.
    if raw_content is not None:
        content = _utf8(raw_content)
    else:
        content = "".join(chunks) if chunks is not None else DEFAULT_CONTENT
    return Controls(
        status=status,
        delay=_number(headers, "x-fake-delay", float) or 0.0,
        interval=_number(headers, "x-fake-interval", float) or 0.0,
        cut_after=_number(headers, "x-fake-cut-after", int),
        content=content,
        chunks=chunks if chunks is not None else _WORD_PIECES.findall(content),
        tool_call=_parse_tool_call(headers.get("x-fake-tool-call")),
        linger=_number(headers, "x-fake-linger", float) or 0.0,
        redirect=headers.get("x-fake-redirect"),
    )


_ERROR_KINDS = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout_error", "timeout"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def error_reply(status: int, message: str | None = None, param: str | None = None) -> Reply:
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    body = {
        "error": {
            "message": message or f"Fake upstream error (HTTP {status})",
            "type": kind,
            "param": param,
            "code": code,
        }
    }
    reply = _json(body, status)
    if status == 429:
        reply.extra_headers.append((b"retry-after", b"1"))
    return reply


# --------------------------------------------------------------------------- #
# Route handlers: (request, controls) -> Reply
# --------------------------------------------------------------------------- #


def chat_completions(req: ReceivedRequest, ctl: Controls) -> Reply:
    body = req.json or {}
    model = body.get("model") or "fake-model"
    usage = _usage(_count_words(_messages_text(body.get("messages"))), _count_words(ctl.content))
    if body.get("stream"):
        return _sse(_chat_events(model, ctl.chunks, usage, _include_usage(body)))
    return _json(
        {
            "id": _new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ctl.content},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    )


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _chat_events(model: str, pieces: list[str], usage: dict, include_usage: bool) -> list[dict]:
    base = {"id": _new_id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append({**base, "choices": [], "usage": usage})
    return events


def completions(req: ReceivedRequest, ctl: Controls) -> Reply:
    body = req.json or {}
    model = body.get("model") or "fake-model"
    prompt = body.get("prompt")
    prompt_text = " ".join(p for p in _as_inputs(prompt) if isinstance(p, str))
    usage = _usage(_count_words(prompt_text), _count_words(ctl.content))
    if body.get("stream"):
        return _sse(_completion_events(model, ctl.chunks, usage, _include_usage(body)))
    return _json(
        {
            "id": _new_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"text": ctl.content, "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
        }
    )


def _completion_events(model: str, pieces: list[str], usage: dict, include_usage: bool) -> list[dict]:
    base = {"id": _new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model}

    def chunk(text: str, finish_reason: str | None = None) -> dict:
        return {**base, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}

    events = [chunk(piece) for piece in pieces]
    events.append(chunk("", "stop"))
    if include_usage:
        events.append({**base, "choices": [], "usage": usage})
    return events


def fake_embedding(value: Any, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """Deterministic vector in [-1, 1] derived from a hash of the input."""
    seed = orjson.dumps(value)
    digest = b""
    while len(digest) < dimensions:
        digest += hashlib.sha256(seed + len(digest).to_bytes(4, "big")).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest[:dimensions]]


def embeddings(req: ReceivedRequest, ctl: Controls) -> Reply:
    body = req.json or {}
    inputs = _as_inputs(body.get("input", ""))
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and 0 < dims <= 4096 else EMBEDDING_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"  # the openai SDK asks for this by default
    data = []
    for index, value in enumerate(inputs):
        vector: Any = fake_embedding(value, dims)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(_count_words(v) if isinstance(v, str) else len(v) if isinstance(v, list) else 1 for v in inputs)
    return _json(
        {
            "object": "list",
            "data": data,
            "model": body.get("model") or "text-embedding-3-small",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _model(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "fake"}


_MODELS_BODY = orjson.dumps({"object": "list", "data": [_model(m) for m in MODEL_IDS]})


def list_models(req: ReceivedRequest, ctl: Controls) -> Reply:
    return Reply(body=_MODELS_BODY)


def retrieve_model(req: ReceivedRequest, ctl: Controls) -> Reply:
    model_id = _normalize(req.path)[len("/models/") :]
    if model_id in MODEL_IDS:
        return _json(_model(model_id))
    return error_reply(404, f"The model '{model_id}' does not exist", param="model")


_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def _moderation_result(value: Any) -> dict:
    flagged = isinstance(value, str) and MODERATION_FLAG_MARKER in value
    categories = {c: flagged and c == "violence" for c in _MODERATION_CATEGORIES}
    scores = {c: 0.99 if categories[c] else 0.0001 for c in _MODERATION_CATEGORIES}
    return {"flagged": flagged, "categories": categories, "category_scores": scores}


def moderations(req: ReceivedRequest, ctl: Controls) -> Reply:
    body = req.json or {}
    return _json(
        {
            "id": _new_id("modr"),
            "model": body.get("model") or "omni-moderation-latest",
            "results": [_moderation_result(v) for v in _as_inputs(body.get("input", ""))],
        }
    )


# A valid 1x1 transparent PNG, for response_format=b64_json.
_TINY_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


def image_generations(req: ReceivedRequest, ctl: Controls) -> Reply:
    body = req.json or {}
    count = body.get("n") if isinstance(body.get("n"), int) and body.get("n") > 0 else 1
    prompt = body.get("prompt") or ""
    if body.get("response_format") == "b64_json":
        data = [{"b64_json": _TINY_PNG_B64, "revised_prompt": prompt} for _ in range(count)]
    else:
        data = [
            {"url": f"https://fake-upstream.invalid/images/{i}.png", "revised_prompt": prompt} for i in range(count)
        ]
    return _json({"created": int(time.time()), "data": data})


# Deterministic "audio": SPEECH_CHUNK_COUNT different 16 KiB chunks.
SPEECH_CHUNKS = [bytes((i * 31 + n * 7) & 0xFF for i in range(SPEECH_CHUNK_SIZE)) for n in range(SPEECH_CHUNK_COUNT)]
SPEECH_BYTES = b"".join(SPEECH_CHUNKS)


def audio_speech(req: ReceivedRequest, ctl: Controls) -> Reply:
    return Reply(chunks=SPEECH_CHUNKS, content_type=b"audio/mpeg")


def audio_transcription(req: ReceivedRequest, ctl: Controls) -> Reply:
    # The multipart body is not parsed: the point is to prove it arrived unchanged.
    return _json(
        {
            "text": ctl.content,
            "received_bytes": len(req.body),
            "content_type": req.headers.get("content-type", ""),
        }
    )


# The stored responses of the app answering the current request: each FakeUpstreamApp keeps its own
# (set in FakeUpstreamApp._http, read by the Responses handlers; every request runs in its own task).
_responses_store: ContextVar[fake_surfaces.ResponsesStore] = ContextVar("responses_store")
INPUT_ITEMS_PAGE = 20  # the Responses API's default `limit` for input_items


def _named_sse(events: list[dict]) -> Reply:
    return Reply(chunks=fake_surfaces.named_events(events), content_type=SSE_TYPE)


def create_response(req: ReceivedRequest, ctl: Controls) -> Reply:
    body = req.json or {}
    response, events = fake_surfaces.create_response(body, ctl.content, ctl.chunks, ctl.tool_call, _count_words)
    if body.get("store", True) is not False:
        _responses_store.get().keep(response, fake_surfaces.input_items(body.get("input")))
    return _named_sse(events) if body.get("stream") else _json(response)


def _input_items_page(items: list[dict], query: str) -> dict:
    """A page of input items; like the real API: `order` (default desc), `limit` (default 20), `after`."""
    params = {name: values[-1] for name, values in parse_qs(query).items()}
    if params.get("order", "desc") == "desc":
        items = items[::-1]
    after = params.get("after")
    ids = [item["id"] for item in items]
    if after in ids:
        items = items[ids.index(after) + 1 :]
    limit = int(params["limit"]) if params.get("limit", "").isdigit() else INPUT_ITEMS_PAGE
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > len(page),
    }


def stored_response(req: ReceivedRequest, ctl: Controls) -> Reply:
    """GET / DELETE /responses/{id}, GET /responses/{id}/input_items, POST /responses/{id}/cancel."""
    _, response_id, *action = _normalize(req.path)[len("/responses") :].split("/")
    store = _responses_store.get()
    stored = store.get(response_id)
    if stored is None:
        return error_reply(404, f"Response with id '{response_id}' not found.", param="response_id")
    response, items = stored
    if action == ["input_items"] and req.method == "GET":
        return _json(_input_items_page(items, req.query))
    if action == ["cancel"] and req.method == "POST":
        cancelled = {**response, "status": "cancelled"}
        store.keep(cancelled, items)  # a later GET sees it cancelled too
        return _json(cancelled)
    if not action and req.method == "DELETE":
        store.forget(response_id)
        return _json({"id": response_id, "object": "response", "deleted": True})
    if not action and req.method == "GET":
        return _json(response)
    return error_reply(404, f"No route for {req.method} {req.path}")


def create_message(req: ReceivedRequest, ctl: Controls) -> Reply:
    body = req.json or {}
    message, events = fake_surfaces.create_message(body, ctl.content, ctl.chunks, ctl.tool_call, _count_words)
    return _named_sse(events) if body.get("stream") else _json(message)


def count_tokens(req: ReceivedRequest, ctl: Controls) -> Reply:
    return _json({"input_tokens": _count_words(fake_surfaces.messages_input_text(req.json or {}))})


def anthropic_error_reply(status: int) -> Reply:
    """x-fake-status on a /messages path: Anthropic's error shape ({"type": "error", "error": {...}})."""
    reply = _json(fake_surfaces.anthropic_error(status, f"Fake upstream error (HTTP {status})"), status)
    if status == 429:
        reply.extra_headers.append((b"retry-after", b"1"))
    return reply


def echo(req: ReceivedRequest, ctl: Controls) -> Reply:
    return _json({"method": req.method, "path": req.path, "query": req.query, "body_length": len(req.body)})


Handler = Callable[[ReceivedRequest, Controls], Reply]

# The one routing table. Keys are paths without the /v1 prefix.
ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/chat/completions"): chat_completions,
    ("POST", "/completions"): completions,
    ("POST", "/embeddings"): embeddings,
    ("GET", "/models"): list_models,
    ("POST", "/moderations"): moderations,
    ("POST", "/images/generations"): image_generations,
    ("POST", "/audio/speech"): audio_speech,
    ("POST", "/audio/transcriptions"): audio_transcription,
    ("POST", "/audio/translations"): audio_transcription,
    ("POST", "/responses"): create_response,
    ("POST", "/messages"): create_message,
    ("POST", "/messages/count_tokens"): count_tokens,
}


def find_handler(method: str, path: str) -> Handler:
    path = _normalize(path)
    handler = ROUTES.get((method, path))
    if handler is not None:
        return handler
    if method == "GET" and path.startswith("/models/"):
        return retrieve_model  # ids may contain "/", e.g. "openai/gpt-4o"
    if path.startswith("/responses/"):
        return stored_response
    return echo


# --------------------------------------------------------------------------- #
# ASGI plumbing
# --------------------------------------------------------------------------- #


async def _read_body(receive: Callable) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body  # the common case: one message, no copying
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


def _make_request(scope: dict, body: bytes) -> ReceivedRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    parsed = None
    if body[:1] == b"{" or body.lstrip()[:1] == b"{":
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return ReceivedRequest(
        method=scope["method"],
        path=scope["path"],
        query=scope["query_string"].decode("latin-1"),
        headers=headers,
        body=body,
        json=parsed if isinstance(parsed, dict) else None,
        client_port=scope["client"][1] if scope.get("client") else None,
    )


async def _client_left_during(receive: Callable, seconds: float) -> bool:
    """Sleep, but wake early (returning True) if the client disconnects.

    Without this, a test whose client timed out would leave a sleeping task
    behind that keeps the server from stopping promptly.
    """
    try:
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
        return True
    except TimeoutError:
        return False


async def _send_reply(send: Callable, receive: Callable, reply: Reply, ctl: Controls) -> None:
    headers = [(b"content-type", reply.content_type), *BASE_HEADERS, *reply.extra_headers]
    if reply.chunks is None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        return
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    for index, chunk in enumerate(reply.chunks):
        if index == ctl.cut_after:
            raise DeliberateCut(f"x-fake-cut-after: {ctl.cut_after}")  # uvicorn closes the socket
        if index and ctl.interval and await _client_left_during(receive, ctl.interval):
            return
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    if ctl.linger and await _client_left_during(receive, ctl.linger):
        return
    await send({"type": "http.response.body", "body": b""})


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class FakeUpstreamApp:
    """The ASGI application. Each instance keeps its own request log."""

    def __init__(self, record: bool = True, max_records: int | None = None) -> None:
        self.record = record
        self._lock = threading.Lock()  # requests are read from the test thread
        self._records: deque[ReceivedRequest] = deque(maxlen=max_records)
        self.responses = fake_surfaces.ResponsesStore()  # created Responses (store != false), bounded

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        request = _make_request(scope, await _read_body(receive))
        if self.record:
            with self._lock:
                self._records.append(request)
        try:
            ctl = parse_controls(request.headers)
        except BadControlHeader as exc:
            await _send_reply(send, receive, error_reply(400, str(exc)), Controls())
            return
        if ctl.delay and await _client_left_during(receive, ctl.delay):
            return
        if ctl.redirect is not None:
            host, port = scope.get("server") or ("127.0.0.1", 80)
            location = f"http://{host}:{port}{ctl.redirect}".encode("latin-1")
            reply = Reply(status=307, extra_headers=[(b"location", location)])
        elif ctl.status is not None and _normalize(request.path).startswith("/messages"):
            reply = anthropic_error_reply(ctl.status)
        elif ctl.status is not None and "x-fake-echo-key" in request.headers:
            # A careless upstream that quotes the credential it was sent back in its error.
            reply = error_reply(ctl.status, f"Incorrect API key: {request.headers.get('authorization', '')}")
        elif ctl.status is not None:
            reply = error_reply(ctl.status)
        else:
            _responses_store.set(self.responses)
            reply = find_handler(request.method, request.path)(request, ctl)
        if "x-fake-security-headers" in request.headers:
            reply.extra_headers += SECURITY_HEADERS
        await _send_reply(send, receive, reply, ctl)

    # -- request log --------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._records)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
        self.responses.clear()


# Module-level app, e.g. for `uvicorn tests.fake_upstream:app`; bounded log so
# a long benchmark cannot grow memory without limit.
app = FakeUpstreamApp(max_records=10_000)
_install_log_filter()


# --------------------------------------------------------------------------- #
# In-process server for tests
# --------------------------------------------------------------------------- #


class FakeUpstream(ServerThread):
    """Runs a FakeUpstreamApp with uvicorn in a daemon thread.

    with FakeUpstream() as upstream:
        httpx.post(upstream.url + "/v1/chat/completions", json={...})
        upstream.last_request.json
    """

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", record: bool = True, max_records: int | None = None
    ) -> None:
        super().__init__(
            FakeUpstreamApp(record=record, max_records=max_records), port=port, host=host, name="fake-upstream"
        )

    def configured(self, config: uvicorn.Config) -> None:
        _install_log_filter()  # after Config: it reconfigures uvicorn's loggers

    # -- addresses ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, e.g. for openai.OpenAI(base_url=...)."""
        return self.url + "/v1"

    # -- request log --------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the recorded requests, oldest first."""
        return self.app.requests

    @property
    def last_request(self) -> ReceivedRequest | None:
        requests = self.app.requests
        return requests[-1] if requests else None

    def requests_for(self, path: str) -> list[ReceivedRequest]:
        """Recorded requests for a path; "/v1/x" and "/x" are treated as the same."""
        wanted = _normalize(path)
        return [r for r in self.app.requests if _normalize(r.path) == wanted]

    def reset(self) -> None:
        self.app.reset()


# --------------------------------------------------------------------------- #
# Standalone (benchmarks)
# --------------------------------------------------------------------------- #


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--no-record", action="store_true", help="do not keep received requests")
    parser.add_argument("--max-records", type=int, default=10_000, help="bound on kept requests")
    args = parser.parse_args(argv)
    application = FakeUpstreamApp(record=not args.no_record, max_records=args.max_records)
    # "auto" picks uvloop and httptools when they are installed.
    uvicorn.run(
        application,
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="on",
        access_log=False,
        loop="auto",
        http="auto",
        timeout_keep_alive=30,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
