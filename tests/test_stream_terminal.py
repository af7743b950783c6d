"""A stream is complete once its terminal event reached the client, whatever the client does next."""

import json

import httpx
import pytest

from tests.test_audit_completeness import records_of

pytestmark = pytest.mark.django_db(transaction=True)

# The upstream keeps its body open this long after the terminal event: the client closes first.
LINGER = {"x-fake-linger": "0.3"}
TERMINALS = {
    "/v1/chat/completions": ({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}, "[DONE]"),
    "/v1/responses": ({"model": "gpt-4o", "input": "Hi"}, "response.completed"),
    "/v1/messages": (
        {"model": "claude-haiku", "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]},
        "message_stop",
    ),
}


def read_until_terminal_then_close(client: httpx.Client, url: str, key: str, body: dict, terminal: str, rid: str):
    """Reads the stream up to its terminal event and hangs up at once, before the upstream's body ends."""
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": rid, **LINGER}
    with client.stream("POST", url, json={**body, "stream": True}, headers=headers) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and (line[5:].strip() == terminal or f'"type":"{terminal}"' in line):
                return True
    return False


def test_a_client_that_closes_right_after_done_leaves_50_ok_records(live, alice_key):
    body, terminal = TERMINALS["/v1/chat/completions"]
    with httpx.Client(timeout=10) as client:
        seen = [
            read_until_terminal_then_close(
                client, live.url + "/v1/chat/completions", alice_key, body, terminal, f"after-done-{i:02d}"
            )
            for i in range(50)
        ]

    records = records_of("after-done-", 50)
    assert all(seen)
    assert sorted({r.outcome for r in records.values()}) == ["ok"]
    assert len(records) == 50


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages"])
def test_the_terminal_event_of_each_surface_completes_its_stream(live, alice_key, path):
    body, terminal = TERMINALS[path]
    with httpx.Client(timeout=10) as client:
        seen = [
            read_until_terminal_then_close(client, live.url + path, alice_key, body, terminal, f"term-{path[4:]}-{i}")
            for i in range(5)
        ]

    records = records_of(f"term-{path[4:]}-", 5)
    assert all(seen)
    assert [r.outcome for r in records.values()] == ["ok"] * 5
    assert all(r.stream for r in records.values())


def test_a_complete_messages_stream_gets_no_error_event(live, alice_key):
    body, _ = TERMINALS["/v1/messages"]
    response = httpx.post(
        live.url + "/v1/messages",
        json={**body, "stream": True},
        headers={"x-api-key": alice_key, "X-Request-ID": "msg-complete-1"},
        timeout=10,
    )

    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    assert events[-1] == {"type": "message_stop"}
    assert "error" not in response.text
    assert records_of("msg-complete-1", 1)["msg-complete-1"].outcome == "ok"
