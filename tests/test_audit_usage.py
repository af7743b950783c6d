"""Usage aggregates: requests, errors, tokens, mean and p95 duration per key, model and day or hour."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from proxy.api.selectors import percentile
from tests.factories import audit_record_create, auditor_create, client_for

USAGE = "/api/usage/"
MARCH_10 = datetime(2025, 3, 10, tzinfo=UTC)
MARCH_11 = MARCH_10 + timedelta(days=1)
RANGE = {"created_after": "2025-03-10T00:00:00Z", "created_before": "2025-03-12T00:00:00Z"}
ALICE = {"key_prefix": "aip-Alice123", "key_name": "alice-app"}
BOB = {"key_prefix": "aip-Bob45678", "key_name": "bob-batch"}


@pytest.fixture
def api(db):
    return client_for(auditor_create())


@pytest.fixture
def traffic(db) -> None:
    """Two days of Alice and Bob; the numbers in the tests below are worked out from these by hand."""
    at = MARCH_10 + timedelta(hours=9)
    # Alice, gpt-4o-mini, March 10: durations 100..500, two errors, the failed one without usage.
    for duration, status in ((100, 200), (200, 200), (300, 200), (400, 429), (500, 500)):
        tokens = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if status == 500:
            tokens = {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}
        audit_record_create(created_at=at, duration_ms=duration, status_code=status, **tokens, **ALICE)
    # Alice, gpt-4o, March 10: no duration recorded.
    audit_record_create(
        created_at=at,
        model_requested="gpt-4o",
        duration_ms=None,
        prompt_tokens=100,
        completion_tokens=50,
        total_tokens=150,
        **ALICE,
    )
    # Bob, gpt-4o-mini, March 10, in two different hours.
    audit_record_create(created_at=at + timedelta(minutes=10), duration_ms=10, **BOB)
    audit_record_create(created_at=at + timedelta(hours=1, minutes=20), duration_ms=20, **BOB)
    # Alice, gpt-4o-mini, March 11: one 404.
    audit_record_create(created_at=MARCH_11 + timedelta(hours=3), duration_ms=50, status_code=404, **ALICE)
    # Outside the range.
    audit_record_create(created_at=MARCH_10 - timedelta(days=9), duration_ms=9999, **ALICE)


def row(bucket, key, model, requests, errors, prompt, completion, total, mean, p95) -> dict:
    return {
        "bucket": bucket,
        "key_prefix": key["key_prefix"],
        "key_name": key["key_name"],
        "model": model,
        "requests": requests,
        "errors": errors,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "mean_duration_ms": mean,
        "p95_duration_ms": p95,
        # No costs in this traffic: tests/test_usage_spend.py has them.
        "spend_usd": "0.000000000",
        "unpriced_requests": 0,
    }


DAILY = [
    row("2025-03-10T00:00:00Z", ALICE, "gpt-4o", 1, 0, 100, 50, 150, None, None),
    # p95 of 100..500: rank 0.95 × 4 = 3.8, so 400 + 0.8 × (500 − 400) = 480.
    row("2025-03-10T00:00:00Z", ALICE, "gpt-4o-mini", 5, 2, 40, 20, 60, 300.0, pytest.approx(480.0)),
    # p95 of 10, 20: 10 + 0.95 × 10 = 19.5.
    row("2025-03-10T00:00:00Z", BOB, "gpt-4o-mini", 2, 0, 10, 6, 16, 15.0, pytest.approx(19.5)),
    row("2025-03-11T00:00:00Z", ALICE, "gpt-4o-mini", 1, 1, 5, 3, 8, 50.0, 50.0),
]


def test_daily_usage(api, traffic):
    response = api.get(USAGE, RANGE)

    assert response.status_code == 200
    report = response.json()
    assert report["bucket"] == "day"
    assert report["created_after"] == "2025-03-10T00:00:00Z"
    assert report["created_before"] == "2025-03-12T00:00:00Z"
    assert report["results"] == DAILY


def test_hourly_usage(api, traffic):
    response = api.get(USAGE, {**RANGE, "bucket": "hour", "key": "aip-Bob45678"})

    assert response.status_code == 200
    assert response.json()["results"] == [
        row("2025-03-10T09:00:00Z", BOB, "gpt-4o-mini", 1, 0, 5, 3, 8, 10.0, 10.0),
        row("2025-03-10T10:00:00Z", BOB, "gpt-4o-mini", 1, 0, 5, 3, 8, 20.0, 20.0),
    ]


def test_filters_narrow_the_usage(api, traffic):
    response = api.get(USAGE, {**RANGE, "status": "4xx"})

    assert [(r["bucket"][:10], r["requests"], r["errors"]) for r in response.json()["results"]] == [
        ("2025-03-10", 1, 1),
        ("2025-03-11", 1, 1),
    ]


def test_python_p95_matches_postgresql(api, traffic, monkeypatch):
    """SQLite has no percentile_cont: the Python fallback must give PostgreSQL's answers."""
    monkeypatch.setattr("proxy.api.selectors.has_percentile_cont", lambda database: False)

    assert api.get(USAGE, RANGE).json()["results"] == DAILY


def test_the_default_range_is_the_last_seven_days(api):
    now = timezone.now()
    audit_record_create(created_at=now - timedelta(days=8), **ALICE)
    audit_record_create(created_at=now - timedelta(days=6), **ALICE)
    audit_record_create(created_at=now - timedelta(minutes=1), **ALICE)

    report = api.get(USAGE).json()

    assert sum(r["requests"] for r in report["results"]) == 2
    after = datetime.fromisoformat(report["created_after"])
    before = datetime.fromisoformat(report["created_before"])
    assert before - after == timedelta(days=7)
    assert abs(before - now) < timedelta(minutes=1)


def test_only_created_before_given_reaches_back_seven_days(api):
    report = api.get(USAGE, {"created_before": "2025-03-12T00:00:00Z"}).json()

    assert report["created_after"] == "2025-03-05T00:00:00Z"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"bucket": "week"}, "bucket"),
        ({"created_after": "soon"}, "created_after"),
        ({"status": "6xx"}, "status"),
    ],
)
def test_invalid_parameters_are_400(api, params, field):
    response = api.get(USAGE, params)

    assert response.status_code == 400
    assert list(response.json()) == [field]


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.95, None),
        ([7.0], 0.95, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([100.0, 200.0, 300.0, 400.0, 500.0], 0.95, 480.0),
    ],
)
def test_percentile(values, fraction, expected):
    assert percentile(values, fraction) == pytest.approx(expected)
