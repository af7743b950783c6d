"""What an audit record keeps of each kind of body: JSON readable, uploads described, never bytes."""

import hashlib

import httpx
import pytest

from policies.models import Policy
from tests.test_audit_completeness import records_of

pytestmark = pytest.mark.django_db(transaction=True)


def test_passthrough_json_is_kept_readable(live, make_key):
    key = make_key("batch-app", policy=Policy.objects.create(name="batches", passthrough_paths=["/v1/batches"]))
    body = {"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    httpx.post(
        live.url + "/v1/batches",
        json=body,
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": "bodies-json-1"},
    )

    record = records_of("bodies-json", 1)["bodies-json-1"]
    assert record.request_body == body
    assert record.forwarded_body == record.request_body
    assert record.response_body["path"] == "/v1/batches"


def test_multipart_upload_is_described_not_stored(live, alice_key):
    audio = b"RIFF" + bytes(range(256)) * 40
    httpx.post(
        live.url + "/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": ("a.wav", audio, "audio/wav")},
        headers={"Authorization": f"Bearer {alice_key}", "X-Request-ID": "bodies-upload-1"},
    )

    record = records_of("bodies-upload", 1)["bodies-upload-1"]
    assert record.request_body["content_type"].startswith("multipart/form-data")
    assert record.request_body["size"] > len(audio)
    assert len(record.request_body["sha256"]) == 64
    assert record.forwarded_body == record.request_body
    assert record.model_requested == "whisper-1"


def test_binary_response_is_described_by_size_and_digest(live, alice_key):
    from tests.fake_upstream import SPEECH_BYTES

    httpx.post(
        live.url + "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello", "voice": "alloy"},
        headers={"Authorization": f"Bearer {alice_key}", "X-Request-ID": "bodies-speech-1"},
    )

    record = records_of("bodies-speech", 1)["bodies-speech-1"]
    assert record.response_body == {
        "content_type": "audio/mpeg",
        "size": len(SPEECH_BYTES),
        "sha256": hashlib.sha256(SPEECH_BYTES).hexdigest(),
    }


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_before_the_answer_still_leaves_a_record(live, alice_key, stream):
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            live.url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": stream},
            headers={
                "Authorization": f"Bearer {alice_key}",
                "X-Request-ID": f"left-early-{stream}",
                "x-fake-delay": "1",
            },
            timeout=0.3,
        )

    record = records_of(f"left-early-{stream}", 1)[f"left-early-{stream}"]
    assert record.outcome == "client_disconnected"
    assert record.status_code == 499
    assert record.request_body["messages"][0]["content"] == "Hi"
