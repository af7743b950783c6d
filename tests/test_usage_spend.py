"""Spend in the usage API: per key, model and period, and each budgeted key's spend against its budget."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from policies.keys import api_key_create
from policies.models import Policy
from tests.factories import audit_record_create, auditor_create, client_for

USAGE = "/api/usage/"


@pytest.fixture
def api(db):
    return client_for(auditor_create())


def test_spend_per_key_model_and_month(api):
    march, april = datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 4, 2, tzinfo=UTC)
    alice = {"key_prefix": "aip-Alice123", "key_name": "alice-app"}
    for at, cost in ((march, "0.25"), (march + timedelta(days=5), "0.50"), (april, "1.125")):
        audit_record_create(created_at=at, cost_usd=Decimal(cost), cost_status="priced", **alice)
    audit_record_create(created_at=april, cost_usd=Decimal(0), cost_status="unknown_price", **alice)

    response = api.get(
        USAGE, {"created_after": "2025-03-01T00:00:00Z", "created_before": "2025-05-01T00:00:00Z", "bucket": "month"}
    )

    assert response.status_code == 200
    rows = [(r["bucket"], r["spend_usd"], r["unpriced_requests"], r["requests"]) for r in response.json()["results"]]
    assert rows == [
        ("2025-03-01T00:00:00Z", "0.750000000", 0, 2),
        ("2025-04-01T00:00:00Z", "1.125000000", 1, 2),
    ]


def test_each_budgeted_key_with_its_spend_this_day_and_month(api):
    policy = Policy.objects.create(name="team", daily_budget_usd=Decimal("5"))
    budgeted, _ = api_key_create(name="budgeted-app", policy=policy)
    overridden, _ = api_key_create(name="big-spender", policy=policy)
    overridden.monthly_budget_usd = Decimal("100")
    overridden.daily_budget_usd = Decimal("20")
    overridden.save()
    api_key_create(name="unlimited-app")
    now = timezone.now()
    earlier_this_month = now.replace(day=1, hour=0, minute=0, second=1) if now.day > 1 else None
    audit_record_create(created_at=now, api_key_id=budgeted.pk, cost_usd=Decimal("1.5"))
    audit_record_create(created_at=now, api_key_id=budgeted.pk, cost_usd=Decimal("0.25"))
    if earlier_this_month is not None:
        audit_record_create(created_at=earlier_this_month, api_key_id=budgeted.pk, cost_usd=Decimal("3"))
    audit_record_create(created_at=now - timedelta(days=40), api_key_id=budgeted.pk, cost_usd=Decimal("9"))

    budgets = {b["key_name"]: b for b in api.get(USAGE).json()["budgets"]}

    assert set(budgets) == {"budgeted-app", "big-spender"}
    mine = budgets["budgeted-app"]
    assert (mine["daily_budget_usd"], mine["monthly_budget_usd"]) == ("5.0000", None)
    assert mine["spent_today_usd"] == "1.750000000"
    assert mine["spent_this_month_usd"] == ("4.750000000" if earlier_this_month else "1.750000000")
    big = budgets["big-spender"]
    assert (big["daily_budget_usd"], big["monthly_budget_usd"]) == ("20.0000", "100.0000")
    assert big["spent_today_usd"] == "0.000000000"
