"""The audit log: one append-only record per /v1 request."""

import uuid

from django.db import models

from policies.models import ApiKey, Policy


class AuditRecord(models.Model):
    class Outcome(models.TextChoices):
        OK = "ok"
        REJECTED = "rejected"
        AUTH_FAILED = "auth_failed"
        INVALID_REQUEST = "invalid_request"
        UPSTREAM_ERROR = "upstream_error"
        UPSTREAM_CUT = "upstream_cut"
        CLIENT_DISCONNECTED = "client_disconnected"
        PROXY_ERROR = "proxy_error"  # aiproxy could not serve it (e.g. keys not checkable)
        INTERRUPTED = "interrupted"  # the worker died mid-request: what was known when it went upstream
        RATE_LIMITED = "rate_limited"  # over a limit or budget of its key: 429, never forwarded

    id = models.BigAutoField(primary_key=True)
    # Written by the worker that served the request; makes replays from the spool idempotent.
    record_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    request_id = models.CharField(max_length=128, db_index=True)
    created_at = models.DateTimeField(db_index=True)

    # No database constraint on these: a key or policy deleted while its records wait in the
    # writer's queue must not fail the batch. The prefix and names survive deletion.
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    key_prefix = models.CharField(max_length=16, blank=True, db_index=True)
    key_name = models.CharField(max_length=100, blank=True)
    policy = models.ForeignKey(
        Policy, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    policy_name = models.CharField(max_length=100, blank=True)
    policy_version = models.PositiveIntegerField(null=True, blank=True)

    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    endpoint = models.CharField(max_length=32)
    model_requested = models.CharField(max_length=200, blank=True)
    model_upstream = models.CharField(max_length=200, blank=True)
    stream = models.BooleanField(default=False)
    # The stored object (a Responses API response id) this request created: it belongs to api_key.
    stored_id = models.CharField(max_length=200, blank=True, default="")

    capture = models.CharField(max_length=16, default="full")
    request_body = models.JSONField(null=True, blank=True)
    forwarded_body = models.JSONField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    bodies_truncated = models.BooleanField(default=False)
    modifications = models.JSONField(default=list, blank=True)

    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=32, choices=Outcome.choices)
    error_type = models.CharField(max_length=64, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)

    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    cached_tokens = models.PositiveIntegerField(null=True, blank=True)
    # What the exchange cost, from its tokens and the price row in force then (its rates kept in `price`).
    cost_usd = models.DecimalField(max_digits=18, decimal_places=9, null=True, blank=True)
    cost_status = models.CharField(max_length=16, blank=True)  # policies.pricing.CostStatus
    price = models.JSONField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    upstream_ms = models.FloatField(null=True, blank=True)
    ttfb_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="audit_newest"),
            models.Index(fields=["key_prefix", "-created_at"], name="audit_key_time"),
            # A key's spend this day and month, by its identity (a regenerated secret has a new prefix).
            models.Index(fields=["api_key", "-created_at"], name="audit_key_id_time"),
            models.Index(fields=["policy", "policy_version", "-created_at"], name="audit_policy_time"),
            models.Index(fields=["model_requested", "-created_at"], name="audit_model_time"),
            models.Index(fields=["model_upstream", "-created_at"], name="audit_upstream_model_time"),
            models.Index(fields=["endpoint", "-created_at"], name="audit_endpoint_time"),
            models.Index(fields=["outcome", "-created_at"], name="audit_outcome_time"),
            models.Index(fields=["status_code", "-created_at"], name="audit_status_time"),
            models.Index(fields=["stored_id"], condition=~models.Q(stored_id=""), name="audit_stored_object"),
        ]
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.method} {self.path} {self.status_code} ({self.request_id})"
