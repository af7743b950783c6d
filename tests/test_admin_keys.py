"""Operators list, search, create (seeing the key once) and revoke keys in the admin."""

import pytest
from django.contrib.messages import get_messages

from policies.keys import api_key_create, key_hash
from policies.models import ApiKey

pytestmark = pytest.mark.django_db


def test_changelist_lists_and_searches_keys(admin_client):
    api_key_create(name="billing-service")
    api_key_create(name="search-frontend")

    response = admin_client.get("/admin/policies/apikey/", {"q": "billing"})

    assert response.status_code == 200
    assert b"billing-service" in response.content
    assert b"search-frontend" not in response.content


def test_creating_a_key_shows_it_once(admin_client):
    response = admin_client.post("/admin/policies/apikey/add/", {"name": "new-app", "is_active": "on"}, follow=True)

    api_key = ApiKey.objects.get(name="new-app")
    shown = [str(m) for m in get_messages(response.wsgi_request)] + [response.content.decode()]
    raw_key = next(
        word
        for text in shown
        for word in text.replace("<", " ").replace(">", " ").split()
        if word.startswith("aip-") and len(word) > 20
    )
    assert api_key.key_hash == key_hash(raw_key)
    # The change page never shows it again.
    again = admin_client.get(f"/admin/policies/apikey/{api_key.pk}/change/")
    assert raw_key.encode() not in again.content


def test_revoke_action(admin_client):
    api_key, _ = api_key_create(name="leaked")

    admin_client.post("/admin/policies/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]})

    api_key.refresh_from_db()
    assert api_key.is_active is False
