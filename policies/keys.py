"""API keys: generation (shown once), hashing, creation and revocation."""

import hashlib
import hmac
import secrets
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from policies.models import ApiKey, Policy

KEY_PREFIX = "aip-"
# "aip-" plus 8 characters: enough to recognise a key in a list, far too few to guess it.
VISIBLE_PREFIX_LENGTH = len(KEY_PREFIX) + 8


def key_hash(raw_key: str) -> str:
    return hmac.new(settings.API_KEY_PEPPER.encode(), raw_key.encode(), hashlib.sha256).hexdigest()


def key_generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_issue(api_key: ApiKey) -> str:
    """Give an unsaved key its secret. The returned raw key exists only here: show it once."""
    raw_key = key_generate()
    api_key.prefix = raw_key[:VISIBLE_PREFIX_LENGTH]
    api_key.key_hash = key_hash(raw_key)
    return raw_key


def api_key_create(
    *, name: str, policy: Policy | None = None, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    api_key = ApiKey(name=name, policy=policy, expires_at=expires_at)
    raw_key = key_issue(api_key)
    api_key.save()
    return api_key, raw_key


def api_keys_revoke(*, queryset) -> int:
    """Revoke keys; updated_at moves, so every worker's cache drops them within a second."""
    return queryset.update(is_active=False, updated_at=timezone.now())


def api_keys_touch(*, last_used: dict[int, datetime]) -> None:
    """Record when keys were last used; batched so no request pays a write."""
    for key_id, used_at in last_used.items():
        ApiKey.objects.filter(pk=key_id).update(last_used_at=used_at)
