"""Every script in examples/ runs as a user would run it, against the suite's aiproxy and fake upstream."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token

from proxy.models import AuditRecord
from tests.fake_upstream import DEFAULT_CONTENT, EMBEDDING_DIMENSIONS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(command: list[str], live, **env: str) -> str:
    """Runs an example with only the environment a user would set; returns its output."""
    completed = subprocess.run(
        command,
        env={"PATH": os.environ["PATH"], "AIPROXY_BASE_URL": live.url, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def python_example(name: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name)]


def test_chat(live, alice_key):
    output = run_example(python_example("chat.py"), live, AIPROXY_API_KEY=alice_key)
    assert DEFAULT_CONTENT in output
    assert "request id: " in output


def test_streaming(live, alice_key, fake_upstream):
    output = run_example(python_example("streaming.py"), live, AIPROXY_API_KEY=alice_key)
    assert output.strip() == DEFAULT_CONTENT
    assert fake_upstream.requests[-1].json["stream"] is True


def test_async_client(live, alice_key, fake_upstream):
    output = run_example(python_example("async_client.py"), live, AIPROXY_API_KEY=alice_key)
    assert output.count(DEFAULT_CONTENT) == 3
    assert len(fake_upstream.requests) == 3


def test_embeddings(live, alice_key):
    output = run_example(python_example("embeddings.py"), live, AIPROXY_API_KEY=alice_key)
    assert f"vector 0: {EMBEDDING_DIMENSIONS} dimensions" in output


def test_responses(live, alice_key, fake_upstream):
    output = run_example(python_example("responses.py"), live, AIPROXY_API_KEY=alice_key)

    assert output.count(DEFAULT_CONTENT) == 2
    follow_up = fake_upstream.requests_for("/v1/responses")[-1].json
    assert follow_up["stream"] is True
    assert follow_up["previous_response_id"].startswith("resp_")


def test_anthropic_messages(live, alice_key, fake_upstream):
    output = run_example(python_example("anthropic_messages.py"), live, AIPROXY_API_KEY=alice_key)

    assert output.count(DEFAULT_CONTENT) == 2
    assert [r.json["model"] for r in fake_upstream.requests_for("/v1/messages")] == ["claude-haiku"] * 2


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(live, alice_key, auditor_token):
    output = run_example(
        ["bash", str(EXAMPLES / "curl.sh")], live, AIPROXY_API_KEY=alice_key, AIPROXY_API_TOKEN=auditor_token
    )
    for section in ("== models", "== chat", "== streamed chat", "== embeddings", "== audit API"):
        assert section in output
    assert '"object":"list"' in output.replace(" ", "")
    assert "data: [DONE]" in output


def test_audit_api(live, alice_key, auditor_token):
    response = httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    assert response.status_code == 200
    wait_for_audit_record(response.headers["x-request-id"])

    output = run_example(python_example("audit_api.py"), live, AIPROXY_API_TOKEN=auditor_token)
    assert f"{alice_key[:12]} chat gpt-4o-mini 200" in output


@pytest.fixture
def auditor_token(transactional_db) -> str:
    user = User.objects.create_user("auditor")
    user.user_permissions.add(Permission.objects.get(codename="view_auditrecord", content_type__app_label="proxy"))
    return Token.objects.create(user=user).key


def wait_for_audit_record(request_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not AuditRecord.objects.filter(request_id=request_id).exists():
        assert time.monotonic() < deadline, "the audit record was not written"
        time.sleep(0.05)
