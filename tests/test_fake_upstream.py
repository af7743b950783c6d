"""Quick checks that the fake upstream behaves like an OpenAI-compatible server."""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.fake_upstream import SPEECH_BYTES, FakeUpstream, fake_embedding

CHAT = "/v1/chat/completions"


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
    openai = pytest.importorskip("openai")
    sdk = openai.OpenAI(base_url=upstream.base_url, api_key="sk-fake", max_retries=0)
    reply = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from fake upstream"
    stream = sdk.chat.completions.create(model="gpt-4o", messages=[], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello from fake upstream"
    # The SDK asks for base64 embeddings by default and decodes them.
    emb = sdk.embeddings.create(model="text-embedding-3-small", input="x")
    assert emb.data[0].embedding == pytest.approx(fake_embedding("x"), abs=1e-6)


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
