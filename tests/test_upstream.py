"""What reaches the upstream, what comes back, and how its failures are told to the client."""

import socket

import httpx
import pytest

from tests.test_bad_input import assert_openai_error

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}


def chat(live, key, *, headers=None) -> httpx.Response:
    return httpx.post(
        live.url + "/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        timeout=10,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_client_key_never_reaches_the_upstream(live, alice_key, fake_upstream, settings):
    settings.LITELLM_API_KEY = "upstream-master-key"

    chat(live, alice_key, headers={"Cookie": "sessionid=abc", "api-key": alice_key, "x-api-key": alice_key})

    sent = fake_upstream.last_request.headers
    assert sent["authorization"] == "Bearer upstream-master-key"
    assert alice_key not in str(sent)
    assert "cookie" not in sent


def test_hop_by_hop_headers_are_dropped_both_ways(live, alice_key, fake_upstream):
    response = chat(
        live,
        alice_key,
        headers={"Connection": "keep-alive, x-secret", "X-Secret": "1", "TE": "trailers", "Upgrade": "h2c"},
    )

    sent = fake_upstream.last_request.headers
    assert "te" not in sent
    assert "upgrade" not in sent
    assert "x-secret" not in sent
    assert "keep-alive" not in response.headers.get("connection", "")


def test_request_id_is_passed_upstream(live, alice_key, fake_upstream):
    response = chat(live, alice_key)

    assert fake_upstream.last_request.headers["x-request-id"] == response.headers["x-request-id"]


def test_useful_upstream_headers_reach_the_client(live, alice_key):
    response = chat(live, alice_key)

    assert response.headers["x-ratelimit-remaining-requests"] == "99"
    assert response.headers["openai-processing-ms"] == "7"
    assert response.headers["x-request-id"]


def test_upstream_internals_are_not_relayed(live, alice_key):
    response = chat(live, alice_key)

    assert "x-litellm-model-api-base" not in response.headers
    assert "x-litellm-key-spend" not in response.headers
    assert "x-litellm-model-id" not in response.headers


def test_a_setting_relays_named_upstream_headers(live, alice_key, settings):
    settings.UPSTREAM_RELAY_HEADERS = frozenset({"x-litellm-model-id"})

    response = chat(live, alice_key)

    assert response.headers["x-litellm-model-id"] == "fake"
    assert "x-litellm-model-api-base" not in response.headers


def test_anthropic_headers_are_forwarded(live, alice_key, fake_upstream):
    chat(live, alice_key, headers={"anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024-05-16"})

    sent = fake_upstream.last_request.headers
    assert (sent["anthropic-version"], sent["anthropic-beta"]) == ("2023-06-01", "tools-2024-05-16")


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_upstream_errors_are_relayed_with_their_status_and_body(live, alice_key, status):
    response = chat(live, alice_key, headers={"x-fake-status": str(status)})

    assert response.status_code == status
    assert "error" in response.json()
    if status == 429:
        assert response.headers["retry-after"] == "1"


def test_unreachable_upstream_is_502(live, alice_key, settings):
    settings.LITELLM_BASE_URL = f"http://127.0.0.1:{closed_port()}"

    response = chat(live, alice_key)

    error = assert_openai_error(response, 502, "upstream_unreachable")
    assert error["type"] == "upstream_error"


def test_slow_upstream_is_504(live, alice_key, settings):
    settings.UPSTREAM_READ_TIMEOUT = 0.3

    response = chat(live, alice_key, headers={"x-fake-delay": "3"})

    error = assert_openai_error(response, 504, "upstream_timeout")
    assert error["type"] == "upstream_error"


def test_audio_speech_bytes_are_streamed_back_whole(live, alice_key):
    from tests.fake_upstream import SPEECH_BYTES

    response = httpx.post(
        live.url + "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello", "voice": "alloy"},
        headers={"Authorization": f"Bearer {alice_key}"},
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    assert response.content == SPEECH_BYTES


def test_transcription_multipart_is_forwarded_unchanged(live, alice_key, fake_upstream):
    response = httpx.post(
        live.url + "/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": ("a.wav", b"RIFF....WAVEfmt " * 100, "audio/wav")},
        headers={"Authorization": f"Bearer {alice_key}"},
    )

    received = fake_upstream.last_request
    assert response.status_code == 200
    assert received.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert response.json()["received_bytes"] == len(received.body)
    assert b"RIFF....WAVEfmt " * 100 in received.body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/moderations", {"input": "hello"}),
        ("/v1/images/generations", {"prompt": "a cat", "model": "dall-e-3"}),
        ("/chat/completions", CHAT),
    ],
)
def test_other_known_endpoints(live, alice_key, fake_upstream, path, body):
    response = httpx.post(live.url + path, json=body, headers={"Authorization": f"Bearer {alice_key}"})

    assert response.status_code == 200
    assert fake_upstream.last_request.path.startswith("/v1/")


def test_only_allowlisted_request_headers_reach_the_upstream(live, alice_key, fake_upstream):
    chat(
        live,
        alice_key,
        headers={
            "x-litellm-api-key": "sk-stolen",
            "X-Forwarded-For": "10.0.0.1",
            "X-Real-IP": "10.0.0.2",
            "Forwarded": "for=10.0.0.3",
            "Content-Encoding": "gzip-ish",
            "X-Custom": "1",
            "OpenAI-Organization": "org-1",
            "Idempotency-Key": "idem-1",
        },
    )

    sent = fake_upstream.last_request.headers
    for name in ("x-litellm-api-key", "x-forwarded-for", "x-real-ip", "forwarded", "content-encoding", "x-custom"):
        assert name not in sent
    assert (sent["openai-organization"], sent["idempotency-key"]) == ("org-1", "idem-1")


def test_credentials_in_the_query_string_never_reach_the_upstream(live, alice_key, fake_upstream):
    httpx.post(
        live.url + f"/v1/chat/completions?api_key={alice_key}&key=x&Token=y&keep=1",
        json=CHAT,
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )

    assert fake_upstream.last_request.query == "keep=1"


def test_aiproxy_decides_its_own_security_and_cors_headers(live, alice_key):
    response = chat(live, alice_key, headers={"x-fake-security-headers": "1"})

    for name in ("content-security-policy", "strict-transport-security", "access-control-allow-origin"):
        assert name not in response.headers
    assert "content-disposition" not in response.headers


def test_the_upstream_key_never_reaches_the_client(live, alice_key, settings):
    settings.LITELLM_API_KEY = "sk-upstream-master-key-123"

    response = chat(live, alice_key, headers={"x-fake-status": "401", "x-fake-echo-key": "1"})

    assert "Bearer sk-upstream-master" not in response.text
    assert "Bearer [redacted]" in response.text
