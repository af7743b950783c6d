"""The audit admin: lists and shows records, filters and searches them, and never changes one."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from policies.keys import api_key_create
from policies.models import Policy
from proxy.models import AuditRecord
from tests.factories import audit_record_create, auditor_create

CHANGELIST = "/admin/proxy/auditrecord/"
NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


def change_url(record: AuditRecord) -> str:
    return f"{CHANGELIST}{record.pk}/change/"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin(db) -> Client:
    return logged_in(User.objects.create_superuser("admin", password="admin-pass-123"))


@pytest.fixture
def auditor(db) -> Client:
    """Staff, so the admin lets them in, with only the audit view permission."""
    return logged_in(auditor_create(is_staff=True))


@pytest.fixture
def mallory(db) -> Client:
    return logged_in(User.objects.create_user("mallory", password="mallory-pass-123", is_staff=True))


@pytest.fixture
def records(db) -> dict[str, AuditRecord]:
    return {
        "ok": audit_record_create(request_id="req-ok", created_at=NOW),
        "limited": audit_record_create(
            request_id="req-limited",
            created_at=NOW - timedelta(days=40),
            status_code=429,
            outcome=AuditRecord.Outcome.UPSTREAM_ERROR,
            key_prefix="aip-Bob45678",
            model_requested="gpt-4o",
            stream=True,
        ),
    }


def listed(response) -> set[str]:
    return {record.request_id for record in response.context["cl"].result_list}


def test_changelist_lists_records(admin, records):
    response = admin.get(CHANGELIST)

    assert response.status_code == 200
    assert listed(response) == {"req-ok", "req-limited"}
    assert b"Add audit record" not in response.content


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "4xx"}, {"req-limited"}),
        ({"status": "429"}, {"req-limited"}),
        ({"outcome__exact": "ok"}, {"req-ok"}),
        ({"stream__exact": "1"}, {"req-limited"}),
        ({"model": "gpt-4o"}, {"req-limited"}),
        ({"key_prefix": "aip-Bob45678"}, {"req-limited"}),
        ({"q": "req-ok"}, {"req-ok"}),
        ({"q": "aip-Bob"}, {"req-limited"}),
        ({"q": "req-"}, set()),
        ({"created_at__year": "2025", "created_at__month": "3"}, {"req-ok"}),
    ],
)
def test_changelist_filters_and_search(admin, records, params, expected):
    response = admin.get(CHANGELIST, params)

    assert response.status_code == 200
    assert listed(response) == expected


def test_filters_offer_keys_policies_models_and_statuses(admin, records):
    api_key_create(name="bob-batch")
    Policy.objects.create(name="strict")

    content = admin.get(CHANGELIST).content.decode()

    assert "bob-batch (aip-" in content
    assert "strict" in content
    assert "?model=gpt-4o" in content
    assert "?status=429" in content
    assert "?status=4xx" in content


def test_policy_filter_uses_the_policy_id(admin, db):
    policy = Policy.objects.create(name="strict")
    audit_record_create(request_id="by-strict", policy_id=policy.pk, policy_name="old name")
    audit_record_create(request_id="other")

    assert listed(admin.get(CHANGELIST, {"policy": str(policy.pk)})) == {"by-strict"}


def test_detail_shows_bodies_as_formatted_json_read_only(admin, records):
    response = admin.get(change_url(records["ok"]))

    assert response.status_code == 200
    content = response.content.decode()
    assert '<pre style="white-space: pre-wrap' in content
    assert "&quot;messages&quot;: [\n    {\n      &quot;role&quot;: &quot;user&quot;" in content
    assert 'name="_save"' not in content
    assert "Delete" not in content


def test_records_of_deleted_keys_and_policies_still_render(admin, db):
    record = audit_record_create(api_key_id=424242, policy_id=434343, policy_name="gone")

    assert admin.get(CHANGELIST).status_code == 200
    response = admin.get(change_url(record))
    assert response.status_code == 200
    assert "424242" in response.content.decode()


@pytest.mark.parametrize("url", ["add/", "{pk}/change/", "{pk}/delete/"])
def test_even_a_superuser_cannot_add_change_or_delete(admin, records, url):
    record = records["ok"]

    response = admin.post(CHANGELIST + url.format(pk=record.pk), {"status_code": "500", "post": "yes"})

    assert response.status_code == 403
    record.refresh_from_db()
    assert record.status_code == 200


def test_no_bulk_delete_action(admin, records):
    response = admin.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [records["ok"].pk], "post": "yes"}
    )

    assert AuditRecord.objects.count() == 2
    assert response.status_code in (200, 302)


def test_an_auditor_can_read(auditor, records):
    assert auditor.get(CHANGELIST).status_code == 200
    assert auditor.get(change_url(records["ok"])).status_code == 200


def test_staff_without_the_permission_cannot(mallory, records):
    assert mallory.get(CHANGELIST).status_code == 403
    assert mallory.get(change_url(records["ok"])).status_code == 403


def test_changelist_does_not_count_a_large_table(admin, records, monkeypatch):
    """On PostgreSQL an unfiltered changelist takes the planner's row estimate, not COUNT(*)."""
    if connection.vendor != "postgresql":
        pytest.skip("the estimate comes from PostgreSQL's statistics")
    monkeypatch.setattr("proxy.admin.ESTIMATE_ABOVE", 1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE proxy_auditrecord")

    with CaptureQueriesContext(connection) as captured:
        response = admin.get(CHANGELIST)

    assert response.status_code == 200
    counts = [query["sql"] for query in captured if "COUNT(" in query["sql"].upper()]
    assert counts == []
    assert listed(response) == {"req-ok", "req-limited"}


def test_a_filtered_changelist_counts_exactly(admin, records, monkeypatch):
    monkeypatch.setattr("proxy.admin.ESTIMATE_ABOVE", 1)

    response = admin.get(CHANGELIST, {"status": "4xx"})

    assert response.context["cl"].result_count == 1


def test_list_page_does_not_load_bodies(admin, records):
    with CaptureQueriesContext(connection) as captured:
        admin.get(CHANGELIST)

    page = [
        query["sql"] for query in captured if 'FROM "proxy_auditrecord"' in query["sql"] and "LIMIT" in query["sql"]
    ]
    assert page
    assert all('"request_body"' not in sql for sql in page)


def test_date_hierarchy_without_a_distinct_scan(admin, records):
    """Records on Feb 2 and Mar 14, 2025: the hierarchy offers both months, computed from the first and last."""
    with CaptureQueriesContext(connection) as captured:
        response = admin.get(CHANGELIST)

    content = response.content.decode()
    assert "created_at__month=2" in content
    assert "created_at__month=3" in content
    assert not [query for query in captured if "DISTINCT" in query["sql"]]

    days = admin.get(CHANGELIST, {"created_at__year": "2025", "created_at__month": "3"}).content.decode()
    assert "created_at__day=14" in days
