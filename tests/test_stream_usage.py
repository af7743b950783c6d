"""A stream reports its usage for the record (its cost, its key's token limits), whether the client asked or not.

Chat streams report usage only when asked (stream_options.include_usage): aiproxy asks, and keeps that
extra event from a client that did not ask, so the client sees the stream it asked for.
"""

import json
import uuid

import httpx
import pytest

from tests.records import wait_for_record

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


def stream(live, key, body) -> tuple[str, list[dict]]:
    request_id = f"usage-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        live.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 200
    events = [
        json.loads(line[5:])
        for line in response.text.splitlines()
        if line.startswith("data:") and line[5:].strip() != "[DONE]"
    ]
    return request_id, events


def test_usage_is_asked_for_and_recorded_but_not_shown_to_a_client_that_did_not_ask(live, alice_key, fake_upstream):
    request_id, events = stream(live, alice_key, CHAT)

    assert fake_upstream.last_request.json["stream_options"] == {"include_usage": True}
    assert not [event for event in events if event.get("usage")], "the usage event aiproxy asked for is its own"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    record = wait_for_record(request_id)
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (1, 4, 5)
    assert record.forwarded_body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in record.request_body


def test_a_client_that_asked_for_usage_gets_it(live, alice_key, fake_upstream):
    body = {**CHAT, "stream_options": {"include_usage": True}}

    request_id, events = stream(live, alice_key, body)

    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["total_tokens"] == 5
    assert wait_for_record(request_id).total_tokens == 5
