"""Quick checks that the fake upstream behaves like an OpenAI-compatible server."""

from __future__ import annotations

import base64
import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.fake_upstream import SPEECH_BYTES, FakeUpstream, fake_embedding

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
CONTENT = "Hello from fake upstream"
WEATHER_CALL = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
WEATHER = {"x-fake-tool-call": json.dumps(WEATHER_CALL)}


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def client(upstream):
    upstream.reset()
    with httpx.Client(base_url=upstream.url, timeout=5) as c:
        yield c


def sse_events(raw: str) -> list[str]:
    """Split an SSE body into its data payloads, checking the framing."""
    assert raw.endswith("\n\n")
    blocks = raw.split("\n\n")[:-1]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks)
    return [b[len("data: ") :] for b in blocks]


def named_sse_events(raw: str) -> list[dict]:
    """Split an `event: <type>` SSE body (Responses, Messages) into its events, checking the framing."""
    assert raw.endswith("\n\n")
    events = []
    for block in raw.split("\n\n")[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ")
        assert data_line.startswith("data: ")
        event = orjson.loads(data_line[len("data: ") :])
        assert event["type"] == event_line[len("event: ") :]
        events.append(event)
    return events


def cut_stream(client: httpx.Client, path: str, body: dict, headers: dict) -> bytes:
    """What arrived of a stream the fake dropped (x-fake-cut-after)."""
    received: list[bytes] = []

    def read_all() -> None:
        with client.stream("POST", path, json=body, headers=headers) as r:
            assert r.status_code == 200
            received.extend(r.iter_raw())

    with pytest.raises(httpx.RemoteProtocolError):
        read_all()
    return b"".join(received)


@pytest.fixture
def sdk(upstream) -> openai.OpenAI:
    upstream.reset()
    return openai.OpenAI(base_url=upstream.base_url, api_key="sk-fake", max_retries=0, timeout=5)


@pytest.fixture
def claude(upstream) -> anthropic.Anthropic:
    upstream.reset()
    return anthropic.Anthropic(base_url=upstream.url, api_key="x", max_retries=0, timeout=5)


# --------------------------------------------------------------------------- #
# Chat completions
# --------------------------------------------------------------------------- #


def test_chat_completion(client):
    r = client.post(CHAT, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three"}]})
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("chatcmpl-fake")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello from fake upstream"}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_common_response_headers_and_path_without_v1(client):
    r = client.post("/chat/completions", json={"model": "m"}, headers={"x-fake-content": "custom text"})
    assert r.json()["choices"][0]["message"]["content"] == "custom text"
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-litellm-model-id"] == "fake"
    assert r.headers["x-ratelimit-remaining-requests"] == "99"
    assert r.headers["x-litellm-model-api-base"] == "http://10.11.12.13:4000"
    assert r.headers["x-litellm-key-spend"] == "0.0"
    assert r.headers["openai-processing-ms"] == "7"


def test_chat_stream_framing(client):
    body = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
    r = client.post(CHAT, json=body)
    assert r.headers["content-type"] == "text/event-stream"
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o-mini" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:5]]
    assert pieces == ["Hello", " from", " fake", " upstream"]
    assert chunks[5]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[6]["choices"] == []
    assert chunks[6]["usage"]["completion_tokens"] == 4
    assert len(chunks) == 7


def test_chat_stream_custom_chunks_without_usage(client):
    r = client.post(CHAT, json={"stream": True}, headers={"x-fake-chunks": '["a", "b"]'})
    chunks = [orjson.loads(e) for e in sse_events(r.text)[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "a", "b", None]
    assert all(c["choices"] for c in chunks)  # no usage chunk unless asked for


def test_stream_interval_spaces_events(client):
    interval = 0.05
    arrivals = []
    with client.stream("POST", CHAT, json={"stream": True}, headers={"x-fake-interval": str(interval)}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 7  # role, 4 pieces, finish, [DONE]
    gaps = len(arrivals) - 1
    assert arrivals[-1] - arrivals[0] >= gaps * interval - 0.01  # tolerance: timer granularity


def test_cut_after_breaks_the_stream(client):
    received: list[bytes] = []

    def read_all() -> None:
        with client.stream("POST", CHAT, json={"stream": True}, headers={"x-fake-cut-after": "2"}) as r:
            assert r.status_code == 200
            received.extend(r.iter_raw())

    with pytest.raises(httpx.RemoteProtocolError):
        read_all()
    assert b"".join(received).count(b"data: ") == 2


def test_openai_sdk_is_happy(upstream):
    sdk = openai.OpenAI(base_url=upstream.base_url, api_key="sk-fake", max_retries=0)
    reply = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from fake upstream"
    stream = sdk.chat.completions.create(model="gpt-4o", messages=[], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello from fake upstream"
    # The SDK asks for base64 embeddings by default and decodes them.
    emb = sdk.embeddings.create(model="text-embedding-3-small", input="x")
    assert emb.data[0].embedding == pytest.approx(fake_embedding("x"), abs=1e-6)


# --------------------------------------------------------------------------- #
# Responses API
# --------------------------------------------------------------------------- #


def test_responses_create(sdk):
    response = sdk.responses.create(model="gpt-4o", input="one two three", instructions="be brief")
    assert response.id.startswith("resp_fake")
    assert (response.object, response.status, response.model) == ("response", "completed", "gpt-4o")
    assert response.output_text == CONTENT
    assert response.instructions == "be brief"
    [message] = response.output
    assert (message.type, message.role, message.status) == ("message", "assistant", "completed")
    assert message.id.startswith("msg_")
    assert message.content[0].type == "output_text"
    assert message.content[0].annotations == []
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (5, 4, 9)  # instructions count too
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert response.error is None
    assert response.incomplete_details is None
    assert (response.tools, response.tool_choice, response.parallel_tool_calls) == ([], "auto", True)


def test_responses_create_counts_list_input(client):
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "a b"},
            {"role": "user", "content": [{"type": "input_text", "text": "c d e"}]},
        ],
    }
    r = client.post("/responses", json=body, headers={"x-fake-content": "x y"})
    assert r.json()["usage"]["input_tokens"] == 5
    assert r.json()["output"][0]["content"][0]["text"] == "x y"


def test_responses_stream_with_the_sdk(sdk):
    events = list(sdk.responses.create(model="gpt-4o", input="hi", stream=True))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert "".join(d.delta for d in deltas) == CONTENT
    assert {(d.item_id, d.output_index, d.content_index) for d in deltas} == {(events[2].item.id, 0, 0)}
    assert events[0].response.status == "in_progress"
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.output_text == CONTENT
    assert completed.id == events[0].response.id


def test_responses_stream_framing(client):
    r = client.post(RESPONSES, json={"input": "hi", "stream": True}, headers={"x-fake-chunks": '["a", "b"]'})
    assert r.headers["content-type"] == "text/event-stream"
    assert "[DONE]" not in r.text
    events = named_sse_events(r.text)
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["a", "b"]
    assert [e for e in events if e["type"] == "response.output_text.done"][0]["text"] == "ab"
    assert events[-1]["type"] == "response.completed"


def test_responses_tool_call(sdk):
    response = sdk.responses.create(model="gpt-4o", input="weather?", extra_headers=WEATHER)
    message, call = response.output
    assert message.type == "message"
    assert (call.type, call.name, call.status) == ("function_call", "get_weather", "completed")
    assert call.id.startswith("fc_")
    assert call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "Paris"}


def test_responses_tool_call_stream(sdk):
    events = list(sdk.responses.create(model="gpt-4o", input="weather?", stream=True, extra_headers=WEATHER))
    tail = [e.type for e in events[-7:]]
    assert tail == [
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[-6]
    assert (added.output_index, added.item.type, added.item.arguments) == (1, "function_call", "")
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(deltas) == WEATHER_CALL["arguments"]
    assert all(e.item_id == added.item.id for e in events[-5:-2])
    assert events[-3].arguments == WEATHER_CALL["arguments"]
    assert events[-1].response.output[1].name == "get_weather"


def test_stored_response_round_trip(sdk):
    created = sdk.responses.create(model="gpt-4o", input="Remember 42.")
    assert sdk.responses.retrieve(created.id).output_text == CONTENT

    items = sdk.responses.input_items.list(created.id)
    [item] = items.data
    assert (item.type, item.role) == ("message", "user")
    assert item.content[0].type == "input_text"
    assert item.content[0].text == "Remember 42."
    assert items.first_id == items.last_id == item.id
    assert items.has_more is False

    assert sdk.responses.cancel(created.id).status == "cancelled"
    assert sdk.responses.retrieve(created.id).status == "cancelled"
    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)


def test_stored_response_raw_shapes(client):
    body = {"input": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]}
    response_id = client.post(RESPONSES, json=body).json()["id"]
    listing = client.get(f"{RESPONSES}/{response_id}/input_items").json()
    assert set(listing) == {"object", "data", "first_id", "last_id", "has_more"}
    texts = [item["content"][0]["text"] for item in listing["data"]]
    assert texts == ["two", "one"]  # newest first by default, like the real API
    ascending = client.get(f"/responses/{response_id}/input_items?order=asc&limit=1").json()
    assert [i["content"][0]["text"] for i in ascending["data"]] == ["one"]
    assert ascending["has_more"] is True
    rest = client.get(f"/responses/{response_id}/input_items?order=asc&after={ascending['last_id']}").json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["two"]

    deleted = client.delete(f"{RESPONSES}/{response_id}")
    assert deleted.json() == {"id": response_id, "object": "response", "deleted": True}
    assert client.get(f"{RESPONSES}/{response_id}").status_code == 404


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("DELETE", ""), ("GET", "/input_items"), ("POST", "/cancel")]
)
def test_unknown_response_id_is_a_404(client, method, suffix):
    r = client.request(method, f"{RESPONSES}/resp_nope{suffix}")
    assert r.status_code == 404
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "resp_nope" in error["message"]


def test_store_false_and_reset_forget_responses(client, upstream):
    unstored = client.post(RESPONSES, json={"input": "x", "store": False}).json()
    assert unstored["store"] is False
    assert client.get(f"{RESPONSES}/{unstored['id']}").status_code == 404
    stored = client.post(RESPONSES, json={"input": "x"}).json()
    assert client.get(f"{RESPONSES}/{stored['id']}").status_code == 200
    upstream.reset()
    assert client.get(f"{RESPONSES}/{stored['id']}").status_code == 404


def test_stored_responses_belong_to_their_app(client):
    response_id = client.post(RESPONSES, json={"input": "x"}).json()["id"]
    with FakeUpstream() as other:
        assert httpx.get(f"{other.url}{RESPONSES}/{response_id}").status_code == 404


def test_responses_cut_stream_has_no_terminal_event(client):
    raw = cut_stream(client, RESPONSES, {"input": "hi", "stream": True}, {"x-fake-cut-after": "3"})
    assert raw.count(b"event: ") == 3
    assert b"response.completed" not in raw


# --------------------------------------------------------------------------- #
# Anthropic Messages
# --------------------------------------------------------------------------- #

HAIKU = "claude-3-5-haiku-latest"


def test_messages_create(claude):
    message = claude.messages.create(
        model=HAIKU, max_tokens=64, system="be brief", messages=[{"role": "user", "content": "one two three"}]
    )
    assert message.id.startswith("msg_fake")
    assert (message.type, message.role, message.model) == ("message", "assistant", HAIKU)
    assert [(b.type, b.text) for b in message.content] == [("text", CONTENT)]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)


def test_messages_create_with_tool(claude):
    message = claude.messages.create(
        model=HAIKU, max_tokens=64, messages=[{"role": "user", "content": "weather?"}], extra_headers=WEATHER
    )
    text, tool_use = message.content
    assert text.type == "text"
    assert (tool_use.type, tool_use.name, tool_use.input) == ("tool_use", "get_weather", {"city": "Paris"})
    assert tool_use.id.startswith("toolu_")
    assert message.stop_reason == "tool_use"


def test_messages_stream_with_the_sdk(claude):
    with claude.messages.stream(model=HAIKU, max_tokens=64, messages=[{"role": "user", "content": "a b"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == CONTENT
    assert final.content[0].text == CONTENT
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 4)
    assert final.stop_reason == "end_turn"


def test_messages_stream_with_tool(claude):
    messages = [{"role": "user", "content": "weather?"}]
    with claude.messages.stream(model=HAIKU, max_tokens=64, messages=messages, extra_headers=WEATHER) as stream:
        final = stream.get_final_message()
    assert final.content[1].type == "tool_use"
    assert final.content[1].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_messages_stream_framing(client):
    body = {"model": HAIKU, "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = client.post(MESSAGES, json=body, headers={"x-fake-chunks": '["a", "b"]', **WEATHER})
    assert r.headers["content-type"] == "text/event-stream"
    assert "[DONE]" not in r.text
    events = named_sse_events(r.text)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0]["message"]
    assert (start["content"], start["usage"]["output_tokens"]) == ([], 1)
    assert events[1]["content_block"] == {"type": "text", "text": ""}
    assert [e["delta"] for e in events[3:5]] == [{"type": "text_delta", "text": t} for t in "ab"]
    assert events[6]["content_block"]["input"] == {}
    assert "".join(e["delta"]["partial_json"] for e in events[7:9]) == WEATHER_CALL["arguments"]
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2]["usage"] == {"output_tokens": 1}


def test_messages_count_tokens(claude):
    counted = claude.messages.count_tokens(
        model=HAIKU, system="be brief", messages=[{"role": "user", "content": "one two three"}]
    )
    assert counted.input_tokens == 5


def test_messages_error_shape(claude, client):
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(
            model=HAIKU,
            max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-status": "429"},
        )
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    r = client.post("/messages/count_tokens", json={}, headers={"x-fake-status": "500"})
    assert r.status_code == 500
    assert r.json()["type"] == "error"
    assert r.json()["error"] == {"type": "api_error", "message": "Fake upstream error (HTTP 500)"}
    assert r.json()["request_id"].startswith("req_")


def test_messages_cut_stream_has_no_terminal_event(client):
    body = {"model": HAIKU, "max_tokens": 8, "stream": True, "messages": []}
    raw = cut_stream(client, MESSAGES, body, {"x-fake-cut-after": "3"})
    assert raw.count(b"event: ") == 3
    assert b"message_stop" not in raw


# --------------------------------------------------------------------------- #
# Redirect
# --------------------------------------------------------------------------- #


def test_redirect(client, upstream):
    r = client.get("/v1/files", headers={"x-fake-redirect": "/v1/files/"})
    assert r.status_code == 307
    assert r.headers["location"] == upstream.url + "/v1/files/"
    assert r.content == b""


# --------------------------------------------------------------------------- #
# Other routes
# --------------------------------------------------------------------------- #


def test_completions_plain_and_streaming(client):
    body = client.post("/v1/completions", json={"model": "gpt-3.5-turbo", "prompt": "say hi"}).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Hello from fake upstream"
    assert body["usage"]["prompt_tokens"] == 2

    r = client.post("/v1/completions", json={"prompt": "x", "stream": True, "stream_options": {"include_usage": True}})
    events = sse_events(r.text)
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Hello from fake upstream"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] == 5
    assert events[-1] == "[DONE]"


def test_embeddings(client):
    one = client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hello"}).json()
    many = client.post("/v1/embeddings", json={"input": ["hello", "world"]}).json()
    assert one["object"] == "list"
    assert len(one["data"]) == 1
    assert [d["index"] for d in many["data"]] == [0, 1]
    assert many["data"][0]["object"] == "embedding"
    assert many["data"][0]["embedding"] == one["data"][0]["embedding"]  # deterministic
    assert many["data"][1]["embedding"] != one["data"][0]["embedding"]
    assert len(one["data"][0]["embedding"]) == 8
    assert many["usage"] == {"prompt_tokens": 2, "total_tokens": 2}

    b64 = client.post("/v1/embeddings", json={"input": "hello", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<8f", base64.b64decode(b64["data"][0]["embedding"]))
    assert decoded == pytest.approx(one["data"][0]["embedding"], abs=1e-6)


def test_models(client):
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    ids = [m["id"] for m in listing["data"]]
    assert {"gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "text-embedding-3-small", "fake-model"} == set(ids)
    assert listing["data"][0]["owned_by"] == "fake"

    assert client.get("/v1/models/gpt-4o").json()["id"] == "gpt-4o"
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_moderations_and_images(client):
    mod = client.post("/v1/moderations", json={"input": ["fine", "fake-flag this"]}).json()
    assert [r["flagged"] for r in mod["results"]] == [False, True]
    assert "violence" in mod["results"][0]["categories"]

    images = client.post("/v1/images/generations", json={"prompt": "a cat", "n": 2}).json()
    assert len(images["data"]) == 2
    assert images["data"][0]["url"].startswith("https://")


def test_audio_speech_streams_binary(client):
    with client.stream("POST", "/v1/audio/speech", json={"model": "tts-1", "input": "hi", "voice": "alloy"}) as r:
        assert r.headers["content-type"] == "audio/mpeg"
        data = r.read()
    assert data == SPEECH_BYTES
    assert len(data) == 4 * 16 * 1024


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/audio/translations"])
def test_audio_transcriptions_receive_multipart(client, upstream, path):
    r = client.post(path, data={"model": "whisper-1"}, files={"file": ("a.mp3", b"\x00\x01" * 500, "audio/mpeg")})
    sent = upstream.last_request
    body = r.json()
    assert body["text"] == "Hello from fake upstream"
    assert body["received_bytes"] == len(sent.body) > 1000
    assert body["content_type"].startswith("multipart/form-data; boundary=")


def test_unknown_routes_echo(client):
    r = client.request("DELETE", "/v1/whatever/thing?a=1&b=2", content=b"12345")
    assert r.status_code == 200
    assert r.json() == {"method": "DELETE", "path": "/v1/whatever/thing", "query": "a=1&b=2", "body_length": 5}
    assert client.get(CHAT).json()["method"] == "GET"  # wrong method for a known path: echo too


# --------------------------------------------------------------------------- #
# Failure modes
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_forced_status(client, status):
    r = client.post(CHAT, json={"stream": True}, headers={"x-fake-status": str(status)})
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert r.headers["x-litellm-model-id"] == "fake"
    assert (r.headers.get("retry-after") == "1") == (status == 429)


def test_bad_control_header_is_a_400(client):
    r = client.post(CHAT, json={}, headers={"x-fake-delay": "soon"})
    assert r.status_code == 400
    assert "x-fake-delay" in r.json()["error"]["message"]


def test_delay(client):
    started = time.monotonic()
    assert client.post(CHAT, json={}, headers={"x-fake-delay": "0.2"}).status_code == 200
    assert time.monotonic() - started >= 0.19
    with pytest.raises(httpx.ReadTimeout):
        client.post(CHAT, json={}, headers={"x-fake-delay": "5"}, timeout=0.1)


# --------------------------------------------------------------------------- #
# Recording and lifecycle
# --------------------------------------------------------------------------- #


def test_recording(client, upstream):
    client.post(CHAT + "?trace=1", json={"model": "gpt-4o"}, headers={"X-Custom": "yes"})
    client.get("/v1/models")
    assert len(upstream.requests) == 2
    first = upstream.requests[0]
    assert (first.method, first.path, first.query) == ("POST", CHAT, "trace=1")
    assert first.headers["x-custom"] == "yes"
    assert first.json == {"model": "gpt-4o"}
    assert orjson.loads(first.body) == first.json
    assert upstream.last_request.path == "/v1/models"
    assert upstream.requests_for("/chat/completions") == [first]
    assert upstream.last_request.json is None
    upstream.reset()
    assert upstream.requests == []
    assert upstream.last_request is None


def test_record_false_keeps_nothing():
    with FakeUpstream(record=False) as server:
        assert httpx.get(server.url + "/v1/models").status_code == 200
        assert server.requests == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_standalone_script():
    port = _free_port()
    script = Path(__file__).with_name("fake_upstream.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", str(port), "--no-record"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "standalone fake upstream did not start"
                time.sleep(0.05)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
