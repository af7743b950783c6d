"""Operators edit policies in the admin: validated on save, versioned, and previewable."""

import json

import pytest

from policies.models import Policy, PolicyVersion

pytestmark = pytest.mark.django_db

FORM = {
    "name": "support-bot",
    "description": "",
    "is_active": "on",
    "system_context": "",
    "system_context_mode": "if_missing",
    "param_defaults": "{}",
    "param_overrides": "{}",
    "model_rules": "[]",
    "allowed_models": "[]",
    "model_aliases": "{}",
    "embedding_default_model": "",
    "user_field": "leave",
    "blocked_patterns": "[]",
    "response_redactions": "[]",
    "annotation_extra": "{}",
    "audit_capture": "full",
    "versions-TOTAL_FORMS": "0",
    "versions-INITIAL_FORMS": "0",
}


def test_saving_creates_a_version_each_time(admin_client):
    admin_client.post("/admin/policies/policy/add/", {**FORM, "system_context": "Be brief."})
    policy = Policy.objects.get(name="support-bot")
    admin_client.post(f"/admin/policies/policy/{policy.pk}/change/", {**FORM, "system_context": "Be kind."})

    policy.refresh_from_db()
    versions = {v.version: v.content["system_context"] for v in PolicyVersion.objects.filter(policy=policy)}
    assert policy.version == 2
    assert versions == {1: "Be brief.", 2: "Be kind."}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("blocked_patterns", '[{"name": "x", "pattern": "[unclosed"}]', "regular expression"),
        ("param_defaults", '["not", "an", "object"]', "object"),
        ("model_rules", '[{"pattern": "gpt-4*"}]', "defaults"),
    ],
)
def test_invalid_policy_is_refused_with_a_readable_message(admin_client, field, value, message):
    response = admin_client.post("/admin/policies/policy/add/", {**FORM, field: value})

    assert response.status_code == 200  # the form again, with errors
    assert message in response.content.decode()
    assert not Policy.objects.exists()


def test_only_one_default_policy(admin_client):
    first = Policy.objects.create(name="first", is_default=True)
    Policy.objects.create(name="second", is_default=True)

    first.refresh_from_db()
    assert first.is_default is False
    assert Policy.objects.get(is_default=True).name == "second"


def test_change_page_links_to_the_preview_and_lists_keys(admin_client):
    from policies.keys import api_key_create

    policy = Policy.objects.create(name="strict")
    api_key_create(name="billing", policy=policy)

    response = admin_client.get(f"/admin/policies/policy/{policy.pk}/change/")

    assert f"/admin/policies/policy/{policy.pk}/preview/".encode() in response.content
    assert b"billing" in response.content


def test_preview_shows_the_forwarded_diff_and_modifications(admin_client):
    policy = Policy.objects.create(name="ctx", system_context="You are terse.", param_defaults={"temperature": 0.2})
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}

    response = admin_client.post(
        f"/admin/policies/policy/{policy.pk}/preview/", {"endpoint": "chat", "body": json.dumps(body)}
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "You are terse." in page
    assert "+    &quot;temperature&quot;: 0.2" in page or "+  &quot;temperature&quot;: 0.2" in page
    assert "default:temperature" in page


def test_preview_shows_a_rejection(admin_client):
    policy = Policy.objects.create(name="narrow", allowed_models=["gpt-4o-mini"])
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}

    response = admin_client.post(
        f"/admin/policies/policy/{policy.pk}/preview/", {"endpoint": "chat", "body": json.dumps(body)}
    )

    assert b"model_not_allowed" in response.content


def test_preview_reports_invalid_json(admin_client):
    policy = Policy.objects.create(name="any")

    response = admin_client.post(f"/admin/policies/policy/{policy.pk}/preview/", {"endpoint": "chat", "body": "{oops"})

    assert b"not valid JSON" in response.content


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        (
            "responses",
            {"model": "gpt-4o", "input": "Hi", "max_output_tokens": 900},
            "&quot;instructions&quot;: &quot;You are terse.&quot;",
        ),
        (
            "messages",
            {"model": "claude-haiku", "max_tokens": 900, "messages": []},
            "&quot;system&quot;: &quot;You are terse.&quot;",
        ),
    ],
)
def test_preview_offers_the_responses_and_messages_surfaces(admin_client, endpoint, body, expected):
    policy = Policy.objects.create(name="ctx", system_context="You are terse.", max_tokens_ceiling=100)

    page = admin_client.get(f"/admin/policies/policy/{policy.pk}/preview/").content.decode()
    response = admin_client.post(
        f"/admin/policies/policy/{policy.pk}/preview/", {"endpoint": endpoint, "body": json.dumps(body)}
    )

    assert f'<option value="{endpoint}"' in page
    assert expected in response.content.decode()
    assert b":900-&gt;100" in response.content
