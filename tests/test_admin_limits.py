"""Operators set limits and budgets on policies and keys, see each key's spend against them, and edit prices."""

import importlib
from decimal import Decimal

import pytest
from django.apps import apps
from django.utils import timezone

from policies.cache import _load_prices
from policies.keys import api_key_create
from policies.models import ModelPrice, Policy
from tests.factories import audit_record_create

pytestmark = pytest.mark.django_db


def test_the_policy_form_has_the_limits_with_their_help(admin_client):
    page = admin_client.get("/admin/policies/policy/add/").content.decode()

    for field in ("rpm_limit", "tpm_limit", "max_parallel_requests", "daily_budget_usd", "monthly_budget_usd"):
        assert f'name="{field}"' in page
    assert "Limits and budgets" in page
    assert "insufficient_quota" in page
    assert "sliding window" in page


def test_limits_saved_in_the_admin_are_part_of_the_policy_version(admin_client):
    form = {"name": "capped", "is_active": "on", "system_context_mode": "if_missing", "user_field": "leave"}
    form |= {"audit_capture": "full", "rpm_limit": "60", "daily_budget_usd": "5.00"}
    for field in ("param_defaults", "param_overrides", "model_aliases", "annotation_extra"):
        form[field] = "{}"
    for field in ("model_rules", "allowed_models", "allowed_surfaces", "passthrough_paths"):
        form[field] = "[]"
    form |= {"blocked_patterns": "[]", "response_redactions": "[]"}
    form |= {"versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0"}

    response = admin_client.post("/admin/policies/policy/add/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    policy = Policy.objects.get(name="capped")
    assert (policy.rpm_limit, policy.daily_budget_usd) == (60, Decimal("5.00"))
    content = policy.versions.get(version=policy.version).content
    assert (content["rpm_limit"], content["daily_budget_usd"]) == (60, "5.00")


def test_a_key_shows_its_spend_against_its_budget(admin_client):
    policy = Policy.objects.create(name="team", daily_budget_usd=Decimal("5"))
    api_key, _ = api_key_create(name="budgeted-app", policy=policy)
    audit_record_create(created_at=timezone.now(), api_key_id=api_key.pk, cost_usd=Decimal("1.25"))

    listing = admin_client.get("/admin/policies/apikey/").content.decode()
    page = admin_client.get(f"/admin/policies/apikey/{api_key.pk}/change/").content.decode()

    assert "$1.25 of $5.00" in listing
    assert "$1.25 of $5.00" in page
    assert 'name="rpm_limit"' in page, "a key can override its policy's limits"


def test_prices_are_edited_in_the_admin(admin_client):
    response = admin_client.post(
        "/admin/policies/modelprice/add/",
        {
            "pattern": "my-model-*",
            "input_per_million": "1.5",
            "cached_input_per_million": "0.5",
            "output_per_million": "6",
        },
    )

    assert response.status_code == 302
    assert _load_prices().price_for("my-model-large").output_per_million == Decimal("6")


def test_common_models_come_priced():
    seed = importlib.import_module("policies.migrations.0005_seed_model_prices")
    ModelPrice.objects.all().delete()
    seed.seed(apps, None)

    prices = _load_prices()

    assert prices.price_for("gpt-4o-mini").input_per_million == Decimal("0.15")
    # A dated snapshot, as the upstream reports the model that answered, finds its family's price.
    assert prices.price_for("gpt-4o-mini-2024-07-18").pattern == "gpt-4o-mini-*"
    assert prices.price_for("gpt-4o-2024-08-06").pattern == "gpt-4o-2024-*"
    assert prices.price_for("claude-sonnet-4-5-20250929").output_per_million == Decimal("15")
    assert prices.price_for("some-local-model") is None
