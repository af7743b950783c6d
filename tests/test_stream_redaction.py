"""A stream never shows what the JSON answer would redact: a long match is held whole, or given up, never leaked."""

import json

import httpx
import pytest

from policies.models import Policy

pytestmark = pytest.mark.django_db(transaction=True)

PEM = "-----BEGIN PRIVATE KEY-----\n" + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n" * 40 + "-----END PRIVATE KEY-----"
PEM_REDACTION = [{"pattern": r"-----BEGIN [A-Z ]+-----[\s\S]*?-----END [A-Z ]+-----", "replacement": "[key]"}]
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Show me the key"}]}


def answer(live, key: str, pieces: list[str], *, stream: bool) -> str:
    response = httpx.post(
        live.url + "/v1/chat/completions",
        json={**CHAT, "stream": stream},
        headers={"Authorization": f"Bearer {key}", "x-fake-chunks": json.dumps(pieces)},
        timeout=10,
    )
    if not stream:
        return response.json()["choices"][0]["message"]["content"]
    chunks = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def test_a_pem_block_streams_as_the_json_answer_shows_it(live, make_key):
    key = make_key("app", policy=Policy.objects.create(name="p", response_redactions=PEM_REDACTION))
    text = f"Here it is: {PEM} Keep it safe."
    pieces = [text[i : i + 16] for i in range(0, len(text), 16)]

    streamed = answer(live, key, pieces, stream=True)

    assert streamed == answer(live, key, pieces, stream=False) == "Here it is: [key] Keep it safe."


def test_a_match_longer_than_the_bound_fails_closed(live, make_key, settings):
    settings.STREAM_REDACTION_HOLD_MAX = 500
    key = make_key("app", policy=Policy.objects.create(name="p", response_redactions=PEM_REDACTION))
    pieces = ["Here: -----BEGIN PRIVATE KEY-----\n", *(["MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"] * 40)]

    streamed = answer(live, key, [*pieces, " and that is all."], stream=True)

    assert streamed == "Here: [key]"
