"""A passthrough path a policy opened can never reach outside the upstream's base URL."""

import socket

import httpx
import pytest

from policies.models import Policy

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def open_key(make_key) -> str:
    """A key whose policy opens every other /v1 path: only the escape check stands between it and the upstream."""
    return make_key("files-app", policy=Policy.objects.create(name="open", passthrough_paths=["/v1/*"]))


def raw_get(live, key: str, raw_path: str) -> tuple[int, bytes]:
    """Send the path byte for byte: HTTP clients normalise '..' away before sending."""
    request = (
        f"GET {raw_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((live.host, live.port), timeout=5) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1/../admin/",
        "/v1/files/../../secret",
        "/v1/%2e%2e/admin",
        "/v1/%2E%2E/%2e%2e/etc/passwd",
        "/v1/files/%2e%2e%2fsecret",
        "/v1//evil.example/x",
        "/v1/files\\..\\secret",
        "/v1/http://evil.example/x",
        "/v1/./files",
    ],
)
def test_escaping_paths_are_refused_with_400(live, open_key, fake_upstream, raw_path):
    status, body = raw_get(live, open_key, raw_path)

    assert status == 400, body
    assert b'"invalid_path"' in body
    assert fake_upstream.requests == []


def test_opened_paths_are_forwarded_as_is(live, open_key, fake_upstream):
    response = httpx.get(
        live.url + "/v1/files/file-abc/content?limit=2", headers={"Authorization": f"Bearer {open_key}"}
    )

    assert response.status_code == 200
    assert response.json()["path"] == "/v1/files/file-abc/content"
    assert fake_upstream.last_request.query == "limit=2"


def test_catch_all_needs_a_key(live, fake_upstream):
    response = httpx.delete(live.url + "/v1/files/file-abc")

    assert response.status_code == 401
    assert fake_upstream.requests == []
