"""The audit API's list and detail: filters, cursor pagination, permissions, read-only, schema."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from proxy.models import AuditRecord
from tests.factories import audit_record_create, auditor_create, client_for

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
LIST = "/api/audit/"
BODY_FIELDS = {"request_body", "forwarded_body", "response_body"}


@pytest.fixture
def auditor(db) -> User:
    return auditor_create()


@pytest.fixture
def mallory(db) -> User:
    """Logged in, even staff, but without the audit permission."""
    return User.objects.create_user("mallory", password="mallory-pass-123", is_staff=True)


@pytest.fixture
def admin(db) -> User:
    return User.objects.create_superuser("admin", password="admin-pass-123")


@pytest.fixture
def api(auditor) -> APIClient:
    return client_for(auditor)


def request_ids(response) -> list[str]:
    return [record["request_id"] for record in response.json()["results"]]


# --- list and detail ----------------------------------------------------------------------


@pytest.mark.django_db
def test_list_is_newest_first_and_omits_bodies(api):
    for minutes in (3, 1, 2):
        audit_record_create(request_id=f"r{minutes}", created_at=NOW - timedelta(minutes=minutes))

    response = api.get(LIST)

    assert response.status_code == 200
    assert request_ids(response) == ["r1", "r2", "r3"]
    record = response.json()["results"][0]
    assert not BODY_FIELDS & record.keys()
    assert record["key_prefix"] == "aip-Alice123"
    assert record["created_at"] == "2025-03-14T11:59:00Z"


@pytest.mark.django_db
def test_list_does_not_load_bodies_or_relations(api, django_assert_num_queries):
    for _ in range(3):
        audit_record_create(api_key_id=999_999, policy_id=888_888)  # both deleted long ago
    # 1. the session, 2. the user, 3. its permissions, 4. the group permissions, 5. the page.
    with django_assert_num_queries(5) as captured:
        response = api.get(LIST)
    assert response.status_code == 200
    assert [record["api_key"] for record in response.json()["results"]] == [999_999] * 3
    page_query = captured.captured_queries[-1]["sql"]
    assert "request_body" not in page_query


@pytest.mark.django_db
def test_detail_returns_the_whole_record(api):
    record = audit_record_create(modifications=[{"op": "set", "field": "temperature"}])

    response = api.get(f"{LIST}{record.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["request_body"]["messages"][0]["content"] == "Hello"
    assert body["response_body"]["choices"][0]["message"]["content"] == "Hi there"
    assert body["forwarded_body"] == record.forwarded_body
    assert body["modifications"] == [{"op": "set", "field": "temperature"}]
    assert body["record_id"] == str(record.record_id)


@pytest.mark.django_db
def test_detail_of_a_missing_record_is_404(api):
    assert api.get(f"{LIST}123456/").status_code == 404


# --- filters ------------------------------------------------------------------------------


@pytest.fixture
def catalogue(db) -> None:
    """One record per trait, each named by its request id, an hour apart (a is the oldest)."""
    traits = {
        "a": {"api_key_id": 12, "key_prefix": "aip-AbCd1234", "policy_id": 3, "policy_name": "strict"},
        "b": {"api_key_id": 13, "key_prefix": "aip-AbXy9876", "policy_version": 2, "status_code": 404},
        "c": {"model_requested": "fast", "model_upstream": "gpt-4o-mini-2024", "status_code": 429},
        "d": {"model_requested": "gpt-4o", "model_upstream": "gpt-4o", "endpoint": "embeddings", "stream": True},
        "e": {"status_code": 502, "outcome": AuditRecord.Outcome.UPSTREAM_ERROR, "duration_ms": 4000.0},
        "f": {"request_body": {"input": "the Zebra crossing"}, "status_code": 400, "policy_version": 7},
        "g": {"forwarded_body": {"note": "zebra forwarded"}, "outcome": AuditRecord.Outcome.REJECTED},
        "h": {"response_body": {"text": "ZEBRA answered"}, "stream": True},
    }
    for hours, (name, fields) in enumerate(traits.items()):
        audit_record_create(request_id=name, created_at=NOW + timedelta(hours=hours), **fields)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"key": "12"}, "a"),
        ({"key": "aip-AbCd1234"}, "a"),
        ({"key": "aip-Ab"}, "ab"),
        ({"policy": "3"}, "a"),
        ({"policy": "strict"}, "a"),
        ({"policy_version": "2"}, "b"),
        ({"model": "fast"}, "c"),
        ({"model": "gpt-4o-mini-2024"}, "c"),
        ({"model": "gpt-4o"}, "d"),
        ({"endpoint": "embeddings"}, "d"),
        ({"status": "404"}, "b"),
        ({"status": "4xx"}, "bcf"),
        ({"status": "5XX"}, "e"),
        ({"outcome": "rejected"}, "g"),
        ({"stream": "true"}, "dh"),
        ({"stream": "false"}, "abcefg"),
        ({"created_after": "2025-03-14T18:00:00Z"}, "gh"),
        ({"created_before": "2025-03-14T13:00:00+00:00"}, "a"),
        ({"created_after": "2025-03-14T13:00:00Z", "created_before": "2025-03-14T15:00:00Z"}, "bc"),
        ({"request_id": "e"}, "e"),
        ({"min_duration_ms": "4000"}, "e"),
        ({"q": "zebra"}, "fgh"),
        ({"q": "zebra", "status": "4xx"}, "f"),
        ({"q": "no such text"}, ""),
        ({"status": "4xx", "created_after": "2025-03-14T14:00:00Z", "key": "aip-Alice123"}, "cf"),
    ],
)
def test_filter(api, catalogue, params, expected):
    response = api.get(LIST, params)

    assert response.status_code == 200, response.json()
    assert sorted(request_ids(response)) == list(expected)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "9xx"}, "status"),
        ({"status": "4x"}, "status"),
        ({"status": "ok"}, "status"),
        ({"status": "4044"}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2025-13-01T00:00:00Z"}, "created_before"),
        ({"outcome": "maybe"}, "outcome"),
        ({"stream": "sometimes"}, "stream"),
        ({"policy_version": "two"}, "policy_version"),
        ({"policy_version": "1.5"}, "policy_version"),
        ({"min_duration_ms": "fast"}, "min_duration_ms"),
        ({"key": "aip-" + "x" * 40}, "key"),
    ],
)
def test_invalid_filter_is_400_naming_the_field(api, params, field):
    response = api.get(LIST, params)

    assert response.status_code == 400
    assert list(response.json()) == [field]


# --- pagination ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_cursor_pages_through_every_record_once(api):
    # Three records share a timestamp: the cursor's offset must still neither skip nor repeat one.
    times = [NOW, NOW, NOW, NOW - timedelta(seconds=1), NOW - timedelta(seconds=2)]
    created = [audit_record_create(created_at=at).request_id for at in times]

    seen, url, pages = [], LIST + "?page_size=2", 0
    while url:
        response = api.get(url)
        assert response.status_code == 200
        seen += request_ids(response)
        url, pages = response.json()["next"], pages + 1

    assert pages == 3
    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen))


@pytest.mark.django_db
def test_previous_link_returns_to_the_first_page(api):
    for minutes in range(4):
        audit_record_create(request_id=f"r{minutes}", created_at=NOW - timedelta(minutes=minutes))

    first = api.get(LIST, {"page_size": 2}).json()
    second = api.get(first["next"]).json()
    back = api.get(second["previous"]).json()

    assert [r["request_id"] for r in second["results"]] == ["r2", "r3"]
    assert [r["request_id"] for r in back["results"]] == ["r0", "r1"]


@pytest.mark.django_db
def test_page_size_defaults_to_50_and_is_capped_at_500(api):
    AuditRecord.objects.bulk_create(
        AuditRecord(
            request_id=f"bulk-{n}",
            created_at=NOW - timedelta(seconds=n),
            method="POST",
            path="/v1/chat/completions",
            endpoint="chat",
            outcome="ok",
        )
        for n in range(510)
    )

    assert len(api.get(LIST).json()["results"]) == 50
    assert len(api.get(LIST, {"page_size": 10}).json()["results"]) == 10
    assert len(api.get(LIST, {"page_size": 10_000}).json()["results"]) == 500


@pytest.mark.django_db
def test_a_forged_cursor_is_404(api):
    response = api.get(LIST, {"cursor": "not-a-cursor"})

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid cursor"}


# --- permissions and methods --------------------------------------------------------------

READ_URLS = [LIST, LIST + "{pk}/", "/api/audit/export.jsonl", "/api/audit/export.csv", "/api/usage/"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", READ_URLS)
def test_anonymous_is_401_with_a_token_challenge(url):
    response = APIClient().get(url.format(pk=audit_record_create().pk))

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
@pytest.mark.parametrize("url", READ_URLS)
def test_a_user_without_the_view_permission_is_403(mallory, url):
    assert client_for(mallory).get(url.format(pk=audit_record_create().pk)).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("url", READ_URLS)
def test_auditor_and_admin_can_read(auditor, admin, url):
    url = url.format(pk=audit_record_create().pk)

    for user in (auditor, admin):
        assert client_for(user).get(url).status_code == 200, user


@pytest.mark.django_db
def test_token_authentication(auditor):
    token = Token.objects.create(user=auditor)
    audit_record_create()
    client = APIClient()

    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(LIST).status_code == 200

    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get(LIST).status_code == 401


@pytest.mark.django_db
def test_a_token_without_the_permission_is_403(mallory):
    token = Token.objects.create(user=mallory)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    assert client.get(LIST).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_the_api_is_read_only(api, admin, method):
    record = audit_record_create()

    for client in (api, client_for(admin)):
        for url in (LIST, f"{LIST}{record.pk}/", "/api/audit/export.csv", "/api/usage/"):
            response = getattr(client, method)(url, {"status_code": 500}, format="json")
            assert response.status_code == 405, (method, url)

    record.refresh_from_db()
    assert record.status_code == 200
    assert AuditRecord.objects.count() == 1


# --- schema -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_schema_lists_the_audit_endpoints():
    response = APIClient().get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/audit/", "/api/audit/{id}/", "/api/audit/export.jsonl", "/api/audit/export.csv", "/api/usage/"):
        assert set(paths[path]) == {"get"}, path
    parameters = {parameter["name"] for parameter in paths["/api/audit/"]["get"]["parameters"]}
    assert {"key", "status", "q", "cursor", "page_size", "created_after"} <= parameters
    assert "drf_create_token" in response.json()["info"]["description"]


@pytest.mark.django_db
def test_schema_generates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))

    assert "/api/audit/" in (tmp_path / "schema.yaml").read_text()


@pytest.mark.django_db
def test_interactive_docs_render():
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
