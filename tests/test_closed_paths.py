"""Closed by default: a key reaches the upstream only through a surface its policy governs, or a path it opens."""

import httpx
import openai
import pytest

from policies.models import Policy
from proxy.models import AuditRecord
from tests.test_audit_completeness import records_of

pytestmark = pytest.mark.django_db(transaction=True)

HI = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
LOCKED = {"allowed_models": ["gpt-4o-mini"], "blocked_patterns": [{"name": "secret", "pattern": "TOPSECRET"}]}


@pytest.fixture
def locked_key(make_key) -> str:
    """A key that may use gpt-4o-mini only, and never send TOPSECRET."""
    return make_key("locked-app", policy=Policy.objects.create(name="locked", **LOCKED))


def call(live, key: str, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.request(method, live.url + path, headers=headers, timeout=10, **kwargs)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/model/info", None),
        ("POST", "/v1/files", {"purpose": "batch"}),
        ("POST", "/v1/batches", {"input_file_id": "f", "endpoint": "/v1/chat/completions"}),
        ("POST", "/v1/fine_tuning/jobs", {"model": "gpt-4o", "training_file": "f"}),
        ("GET", "/v1/vector_stores", None),
        ("POST", "/v1/assistants", {"model": "gpt-4o"}),
        ("GET", "/v1/realtime", None),
        ("POST", "/v1/engines/gpt-4o/chat/completions", HI),
        ("POST", "/v1/chat", HI),
    ],
)
def test_other_paths_are_404_and_the_upstream_sees_nothing(live, locked_key, fake_upstream, method, path, body):
    response = call(live, locked_key, method, path, json=body, headers={"X-Request-ID": "closed-1"})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert fake_upstream.requests == []
    record = records_of("closed-1", 1)["closed-1"]
    assert (record.outcome, record.endpoint, record.key_name) == ("invalid_request", "other", "locked-app")


def test_a_key_without_a_policy_is_closed_too(live, alice_key, fake_upstream):
    response = call(live, alice_key, "GET", "/v1/model/info")

    assert response.status_code == 404
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions/", "/v1//chat/completions", "/v1/chat//completions/", "/v1/chat/completions///"],
)
def test_a_variant_of_a_governed_path_is_served_as_that_surface(live, locked_key, fake_upstream, path):
    blocked = call(live, locked_key, "POST", path, json={**HI, "messages": [{"role": "user", "content": "TOPSECRET"}]})
    forbidden = call(live, locked_key, "POST", path, json={**HI, "model": "gpt-4o"})
    served = call(live, locked_key, "POST", path, json=HI)

    assert blocked.json()["error"]["code"] == "content_policy_violation"
    assert forbidden.json()["error"]["code"] == "model_not_allowed"
    assert served.status_code == 200
    assert [r.path for r in fake_upstream.requests] == ["/v1/chat/completions"]


@pytest.mark.parametrize("path", ["/v1/responses/", "/v1//responses"])
def test_responses_variants_are_governed_too(live, locked_key, fake_upstream, path):
    response = call(live, locked_key, "POST", path, json={"model": "gpt-4o", "input": "Hi"})

    assert response.json()["error"]["code"] == "model_not_allowed"
    assert fake_upstream.requests == []


def test_a_case_variant_is_refused_never_forwarded(make_key, live, fake_upstream):
    key = make_key("open-app", policy=Policy.objects.create(name="open", passthrough_paths=["/v1/*"]))

    response = call(live, key, "POST", "/v1/Chat/Completions", json={**HI, "model": "anything"})

    assert response.status_code == 404
    assert "/v1/chat/completions" in response.json()["error"]["message"]
    assert fake_upstream.requests == []


def test_a_surface_the_policy_does_not_allow_is_403(make_key, live, fake_upstream):
    key = make_key("chat-only", policy=Policy.objects.create(name="chat-only", allowed_surfaces=["chat", "models"]))

    refused = call(live, key, "POST", "/v1/responses", json={"model": "gpt-4o", "input": "Hi"})
    embeddings = call(live, key, "POST", "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    chat = call(live, key, "POST", "/v1/chat/completions", json=HI)

    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "endpoint_not_allowed")
    assert embeddings.status_code == 403
    assert chat.status_code == 200
    assert [r.path for r in fake_upstream.requests] == ["/v1/chat/completions"]


def test_endpoint_not_allowed_reaches_the_sdk(make_key, live):
    key = make_key("chat-only", policy=Policy.objects.create(name="chat-only", allowed_surfaces=["chat"]))
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0, timeout=10)

    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.responses.create(model="gpt-4o", input="Hi")

    assert caught.value.code == "endpoint_not_allowed"


def test_an_opened_path_is_forwarded_with_the_model_check(make_key, live, fake_upstream):
    policy = Policy.objects.create(
        name="tuning", allowed_models=["gpt-4o-mini"], passthrough_paths=["/v1/fine_tuning/*"]
    )
    key = make_key("tuner", policy=policy)

    allowed = call(live, key, "POST", "/v1/fine_tuning/jobs", json={"model": "gpt-4o-mini", "training_file": "f"})
    forbidden = call(live, key, "POST", "/v1/fine_tuning/jobs", json={"model": "gpt-4o", "training_file": "f"})
    not_opened = call(live, key, "GET", "/v1/files")

    assert allowed.status_code == 200
    assert forbidden.json()["error"]["code"] == "model_not_allowed"
    assert not_opened.status_code == 404
    assert [r.path for r in fake_upstream.requests] == ["/v1/fine_tuning/jobs"]


@pytest.mark.parametrize(
    "path", ["/v1/engines/gpt-4o/chat/completions", "/v1/deployments/gpt-4o/embeddings/", "/v1/x/Responses"]
)
def test_an_opened_path_never_reaches_a_model_endpoint_by_another_name(make_key, live, fake_upstream, path):
    key = make_key("open-app", policy=Policy.objects.create(name="open", passthrough_paths=["/v1/*"]))

    response = call(live, key, "POST", path, json={**HI, "model": "gpt-4o"})

    assert response.status_code == 404
    assert fake_upstream.requests == []


def test_an_upstream_redirect_never_names_the_upstream(make_key, live, fake_upstream):
    key = make_key("files-app", policy=Policy.objects.create(name="files", passthrough_paths=["/v1/files*"]))

    response = call(live, key, "GET", "/v1/files", headers={"x-fake-redirect": "/v1/files/"}, follow_redirects=False)

    assert response.status_code == 307
    assert response.headers["location"] == "/v1/files/"
    assert fake_upstream.url not in response.text


def test_refusals_are_audited_with_the_key(live, locked_key):
    call(live, locked_key, "POST", "/v1/batches", json={}, headers={"X-Request-ID": "closed-audit-1"})

    record = records_of("closed-audit-1", 1)["closed-audit-1"]
    assert record.status_code == 404
    assert record.api_key_id is not None
    assert AuditRecord.objects.filter(request_id="closed-audit-1").count() == 1
