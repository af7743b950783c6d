"""Bad input always gets an OpenAI-shaped 4xx: never a 500, never an HTML page."""

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]
    return error


def post(live, key, path="/v1/chat/completions", **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.post(live.url + path, headers=headers, timeout=10, **kwargs)


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2, 3]", "invalid_json"),
        (b'"a string"', "invalid_json"),
        (b'{"model": "gpt-4o", "messages": [], "stream": "yes"}', "invalid_type"),
        (b'{"model": 42, "messages": []}', "invalid_type"),
    ],
)
def test_malformed_json_body(live, alice_key, content, code):
    response = post(live, alice_key, content=content, headers={"Content-Type": "application/json"})

    assert_openai_error(response, 400, code)


def test_missing_model(live, alice_key):
    response = post(live, alice_key, json={"messages": [{"role": "user", "content": "Hi"}]})

    error = assert_openai_error(response, 400, "missing_required_parameter")
    assert error["param"] == "model"


def test_wrong_content_type(live, alice_key):
    response = post(
        live, alice_key, content=b"model=gpt-4o", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )

    assert_openai_error(response, 415, "unsupported_content_type")


def test_body_over_the_limit_is_413(live, alice_key, settings):
    settings.MAX_REQUEST_BYTES = 1000

    response = post(live, alice_key, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 2000}]})

    assert_openai_error(response, 413, "request_too_large")


def test_unsupported_method_is_405(live, alice_key):
    response = httpx.get(live.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {alice_key}"})

    assert_openai_error(response, 405, "method_not_allowed")


@pytest.mark.parametrize("path", ["/nowhere", "/v1", "/api-not-here/x"])
def test_unknown_path_outside_v1_is_json_404(live, path):
    response = httpx.get(live.url + path)

    assert_openai_error(response, 404, "not_found")


def test_multipart_endpoint_refuses_json(live, alice_key):
    response = post(live, alice_key, "/v1/audio/transcriptions", json={"model": "whisper-1"})

    assert_openai_error(response, 415, "unsupported_content_type")


def test_admin_without_trailing_slash_redirects(live):
    response = httpx.get(live.url + "/admin")

    assert response.status_code == 301
    assert response.headers["location"] == "/admin/"


def test_chunked_body_over_the_limit_is_413(live, alice_key, settings):
    settings.MAX_REQUEST_BYTES = 1000

    def chunks():
        yield b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}]}'

    response = post(live, alice_key, content=chunks(), headers={"Content-Type": "application/json"})

    assert_openai_error(response, 413, "request_too_large")


def test_cors_preflight_from_an_allowed_origin(live, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]

    response = httpx.options(
        live.url + "/v1/chat/completions",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in response.headers["access-control-allow-headers"]


def test_a_post_to_an_unknown_path_outside_v1_is_json_not_a_csrf_page(live):
    response = httpx.post(live.url + "/nowhere", data={"a": "b"}, timeout=10)

    assert_openai_error(response, 404, "not_found")


def test_a_model_sent_as_a_file_part_is_refused(make_key, live, fake_upstream):
    from policies.models import Policy

    key = make_key("app", policy=Policy.objects.create(name="p", allowed_models=["whisper-1"]))

    response = httpx.post(
        live.url + "/v1/audio/transcriptions",
        files={"file": ("a.wav", b"RIFF....", "audio/wav"), "model": ("m.txt", b"gpt-4o-transcribe", "text/plain")},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )

    assert_openai_error(response, 400, "invalid_type")
    assert fake_upstream.requests == []
