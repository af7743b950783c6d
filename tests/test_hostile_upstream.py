"""A hostile upstream costs bounded memory and linear CPU, never a crash; the client and the record say what it did."""

import json

import httpx
import pytest

from tests.hostile_upstream import MALFORMED_EVENTS, HostileUpstream
from tests.test_audit_completeness import records_of

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(scope="module")
def hostile():
    upstream = HostileUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def via_hostile(live, hostile, settings):
    """aiproxy pointed at the hostile upstream for this test."""
    settings.LITELLM_BASE_URL = hostile.url
    return live


def post(live, key: str, mode: str, rid: str, *, stream: bool = False, size: int | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "x-hostile": mode, "X-Request-ID": rid}
    if size is not None:
        headers["x-hostile-size"] = str(size)
    body = {**CHAT, "stream": stream}
    return httpx.post(live.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def data_lines(text: str) -> list[str]:
    return [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]


def test_a_status_outside_100_599_is_a_recorded_502(via_hostile, alice_key):
    response = post(via_hostile, alice_key, "status-700", "hostile-status-1")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_bad_response"
    record = records_of("hostile-status-1", 1)["hostile-status-1"]
    assert (record.outcome, record.upstream_status, record.status_code) == ("upstream_error", 700, 502)


@pytest.mark.parametrize("redacting", [False, True])
def test_malformed_stream_json_is_relayed_as_sent_and_recorded(via_hostile, make_key, redacting):
    from policies.models import Policy

    redactions = [{"pattern": "secret"}] if redacting else []
    key = make_key("app", policy=Policy.objects.create(name="p", response_redactions=redactions))

    response = post(via_hostile, key, "malformed", f"hostile-malformed-{redacting}", stream=True)

    assert response.status_code == 200
    assert data_lines(response.text) == [e.decode() for e in MALFORMED_EVENTS] + ["[DONE]"]
    record = records_of(f"hostile-malformed-{redacting}", 1)[f"hostile-malformed-{redacting}"]
    assert record.outcome == "ok"
    assert record.response_body["aiproxy_unparsed_events"] >= 4
    assert record.response_body["choices"][0]["message"]["content"].endswith("fine")


def test_an_over_size_event_ends_the_stream_with_a_recorded_error(via_hostile, alice_key, settings):
    settings.STREAM_EVENT_MAX_BYTES = 256 * 1024

    response = post(via_hostile, alice_key, "huge-event", "hostile-event-1", stream=True, size=4 * 1024 * 1024)

    last = json.loads(data_lines(response.text)[-1])
    assert last["error"]["code"] == "upstream_bad_response"
    assert len(response.content) < 64 * 1024
    record = records_of("hostile-event-1", 1)["hostile-event-1"]
    assert (record.outcome, record.error_code) == ("upstream_error", "upstream_bad_response")


def test_an_endless_stream_keeps_a_bounded_record(via_hostile, alice_key, settings):
    settings.AUDIT_MAX_BODY_BYTES = 64 * 1024
    headers = {"Authorization": f"Bearer {alice_key}", "x-hostile": "endless", "X-Request-ID": "hostile-endless-1"}
    received = 0
    with httpx.stream(
        "POST", via_hostile.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers, timeout=30
    ) as response:
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > 4 * 1024 * 1024:
                break

    record = records_of("hostile-endless-1", 1)["hostile-endless-1"]
    assert record.outcome == "client_disconnected"
    assert record.bodies_truncated is True
    # What was assembled for the record stopped at the cap, not at the 4 MB the client read.
    stored = record.response_body
    assert stored.get("size", len(json.dumps(stored))) < 2 * 64 * 1024


def test_a_json_answer_too_large_to_rewrite_is_relayed_unchanged_and_flagged(via_hostile, alice_key, settings):
    settings.JSON_REWRITE_MAX_BYTES = 512 * 1024
    size = 3 * 1024 * 1024

    response = post(via_hostile, alice_key, "huge-json", "hostile-json-1", size=size)

    assert response.status_code == 200
    assert response.content.startswith(b'{"id": "big"')
    assert response.content.count(b"z") == size
    record = records_of("hostile-json-1", 1)["hostile-json-1"]
    assert record.bodies_truncated is True
    assert record.response_body["size"] == len(response.content)
    assert len(record.response_body["sha256"]) == 64
