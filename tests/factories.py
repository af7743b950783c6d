"""Factories shared by test files: audit records and audit API users, as the suite's personas use them."""

import uuid

from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rest_framework.test import APIClient

from proxy.models import AuditRecord


def audit_record_create(**fields) -> AuditRecord:
    """An audit record as the writer stores one; keyword arguments override the defaults."""
    defaults = {
        "request_id": uuid.uuid4().hex,
        "created_at": timezone.now(),
        "key_prefix": "aip-Alice123",
        "key_name": "alice-app",
        "method": "POST",
        "path": "/v1/chat/completions",
        "endpoint": "chat",
        "model_requested": "gpt-4o-mini",
        "model_upstream": "gpt-4o-mini-2024-07-18",
        "status_code": 200,
        "outcome": AuditRecord.Outcome.OK,
        "request_body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
        "forwarded_body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
        "response_body": {"choices": [{"message": {"role": "assistant", "content": "Hi there"}}]},
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
        "duration_ms": 120.0,
    }
    return AuditRecord.objects.create(**{**defaults, **fields})


def auditor_create(username: str = "auditor", **fields) -> User:
    """A user whose only permission is to view audit records."""
    user = User.objects.create_user(username, password="audit-pass-123", **fields)
    user.user_permissions.add(Permission.objects.get(codename="view_auditrecord", content_type__app_label="proxy"))
    return user


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client
