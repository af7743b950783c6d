"""purge_audit: batched deletes, global and per-policy retention, dry runs."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from policies.models import Policy
from proxy.management.commands.purge_audit import parse_age
from proxy.models import AuditRecord
from tests.factories import audit_record_create


def aged(name: str, days: float, **fields) -> AuditRecord:
    return audit_record_create(request_id=name, created_at=timezone.now() - timedelta(days=days), **fields)


def purge(*args: str) -> str:
    out = StringIO()
    call_command("purge_audit", *args, stdout=out)
    return out.getvalue()


def remaining() -> set[str]:
    return set(AuditRecord.objects.values_list("request_id", flat=True))


@pytest.fixture
def history(db) -> None:
    """Records of every retention case; each name says whether a 90-day purge keeps it."""
    short = Policy.objects.create(name="short", audit_retention_days=7)
    long = Policy.objects.create(name="long", audit_retention_days=365)
    unset = Policy.objects.create(name="unset")
    aged("no-policy-100d-gone", 100)
    aged("no-policy-10d-kept", 10)
    aged("short-8d-gone", 8, policy_id=short.pk)
    aged("short-5d-kept", 5, policy_id=short.pk)
    aged("long-100d-kept", 100, policy_id=long.pk)
    aged("long-400d-gone", 400, policy_id=long.pk)
    aged("unset-100d-gone", 100, policy_id=unset.pk)
    aged("unset-10d-kept", 10, policy_id=unset.pk)
    aged("deleted-policy-100d-gone", 100, policy_id=999_999)


def test_global_and_per_policy_retention(history):
    output = purge("--older-than", "90d")

    assert remaining() == {"no-policy-10d-kept", "short-5d-kept", "long-100d-kept", "unset-10d-kept"}
    assert "Deleted 3 audit records older than 90 days" in output
    assert "Deleted 1 audit records of policy 'short' older than 7 days" in output
    assert "Deleted 1 audit records of policy 'long' older than 365 days" in output
    assert "Deleted 5 audit records in total." in output


@pytest.mark.django_db
@pytest.mark.parametrize(("retention_days", "expected"), [(90, {"d10", "d60"}), (30, {"d10"}), (5, set())])
def test_default_age_comes_from_settings(settings, retention_days, expected):
    settings.AUDIT_RETENTION_DAYS = retention_days
    for days in (10, 60, 100):
        aged(f"d{days}", days)

    purge()

    assert remaining() == expected


def test_dry_run_counts_and_deletes_nothing(history):
    output = purge("--older-than", "90d", "--dry-run")

    assert AuditRecord.objects.count() == 9
    assert "Would delete 3 audit records older than 90 days" in output
    assert "Would delete 5 audit records in total." in output


@pytest.mark.django_db
def test_hours(db):
    aged("two-hours", 2 / 24)
    aged("half-hour", 0.5 / 24)

    output = purge("--older-than", "1h")

    assert remaining() == {"half-hour"}
    assert "older than 1 hour (records without a retention of their own)" in output


@pytest.mark.django_db
def test_deletes_in_batches_oldest_first():
    for day in range(5):
        aged(f"old-{day}", 100 + day)
    aged("young", 1)

    with CaptureQueriesContext(connection) as captured:
        output = purge("--older-than", "90d", "--batch-size", "2", "-v", "2")

    deletes = [query["sql"] for query in captured if query["sql"].startswith("DELETE")]
    assert len(deletes) == 3
    assert remaining() == {"young"}
    assert "deleted a batch of 2 (2 so far)" in output
    assert "deleted a batch of 1 (5 so far)" in output


@pytest.mark.django_db
def test_records_sharing_a_timestamp_across_batches_are_all_deleted():
    moment = timezone.now() - timedelta(days=100)
    for n in range(5):
        audit_record_create(request_id=f"same-{n}", created_at=moment)

    purge("--older-than", "90d", "--batch-size", "2")

    assert remaining() == set()


@pytest.mark.parametrize(("text", "expected"), [("90d", timedelta(days=90)), ("12h", timedelta(hours=12))])
def test_parse_age(text, expected):
    assert parse_age(text) == expected


@pytest.mark.django_db
@pytest.mark.parametrize("args", [["--older-than", "90"], ["--older-than", "3w"], ["--batch-size", "0"]])
def test_bad_arguments_are_refused(args):
    aged("old", 100)

    with pytest.raises(CommandError):
        purge(*args)

    assert remaining() == {"old"}
