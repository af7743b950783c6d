"""Streams are relayed event by event, closed when the client leaves, and never cut silently."""

import json
import logging
import time

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


def stream_events(live, key, *, headers=None, body=CHAT):
    """(arrival time, data payload) of each SSE event the client receives."""
    events = []
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            live.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}", **(headers or {})},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append((time.monotonic(), line[5:].strip()))
    return events


def test_events_arrive_one_by_one_as_the_upstream_sends_them(live, alice_key):
    interval = 0.25

    events = stream_events(live, alice_key, headers={"x-fake-interval": str(interval)})

    # role chunk, 4 content chunks, finish chunk, [DONE]: 6 gaps of `interval` upstream.
    assert len(events) == 7
    first_arrival, last_arrival = events[0][0], events[-1][0]
    assert last_arrival - first_arrival >= 5 * interval
    gaps = [later[0] - earlier[0] for earlier, later in zip(events, events[1:], strict=False)]
    assert min(gaps[:-1]) >= interval * 0.5


def test_stream_ends_with_done(live, alice_key):
    events = stream_events(live, alice_key)

    assert events[-1][1] == "[DONE]"


def test_upstream_cut_mid_stream_ends_with_an_openai_error_event(live, alice_key):
    events = stream_events(live, alice_key, headers={"x-fake-cut-after": "2"})

    payloads = [event[1] for event in events]
    assert "[DONE]" not in payloads
    error = json.loads(payloads[-1])["error"]
    assert error["code"] == "upstream_stream_interrupted"
    assert error["type"] == "upstream_error"
    # What arrived before the cut was relayed.
    assert len(payloads) == 3


def test_stream_carries_usage_when_asked(live, alice_key):
    body = {**CHAT, "stream_options": {"include_usage": True}}

    events = stream_events(live, alice_key, body=body)

    usage_chunks = [json.loads(data) for _, data in events if data != "[DONE]" and '"usage"' in data]
    assert usage_chunks[-1]["usage"]["total_tokens"] > 0


def test_client_disconnect_closes_the_upstream_stream(live, alice_key, caplog):
    caplog.set_level(logging.INFO, logger="aiproxy.access")
    slow_stream = {"x-fake-interval": "0.5", "x-fake-chunks": json.dumps(["a"] * 20)}
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            live.url + "/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {alice_key}", **slow_stream},
        ) as response,
    ):
        next(response.iter_lines())
    left_at = time.monotonic()

    outcome = wait_for_access_log(caplog, timeout=5)

    # Finished long before the upstream's 10-second stream would have ended.
    assert outcome["outcome"] == "client_disconnected"
    assert time.monotonic() - left_at < 5


def wait_for_access_log(caplog, *, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished = [r.fields for r in caplog.records if r.name == "aiproxy.access" and r.fields.get("stream")]
        if finished:
            return finished[-1]
        time.sleep(0.05)
    raise AssertionError("no access log line for the stream")


def test_completions_stream(live, alice_key):
    body = {"model": "gpt-3.5-turbo", "prompt": "Hi", "stream": True}
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST", live.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {alice_key}"}
        ) as response,
    ):
        lines = [line for line in response.iter_lines() if line.startswith("data:")]

    texts = [json.loads(line[5:])["choices"][0]["text"] for line in lines[:-1] if json.loads(line[5:])["choices"]]
    assert "".join(texts) == "Hello from fake upstream"
