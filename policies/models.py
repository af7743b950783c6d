"""What operators configure: policies (with every version kept) and API keys."""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from policies.limits import LIMIT_FIELDS, Limits
from policies.surfaces import GOVERNED
from policies.validation import validate_policy_content


class SystemContextMode(models.TextChoices):
    IF_MISSING = "if_missing", "Add only when the request has no system message"
    PREPEND = "prepend", "Always add first"
    REPLACE = "replace", "Replace the client's system messages"


class UserFieldMode(models.TextChoices):
    LEAVE = "leave", "Leave as sent"
    KEY_NAME = "key_name", "The API key's name"
    CLIENT_IP = "client_ip", "The client's IP address"


class AuditCapture(models.TextChoices):
    FULL = "full", "Full request and response bodies"
    METADATA = "metadata", "Metadata only (no bodies)"


def _jsonable(value):
    return str(value) if isinstance(value, Decimal) else value


def _empty_list() -> list:
    return []


def _empty_dict() -> dict:
    return {}


def limit_fields(*, on_key: bool) -> dict[str, models.Field]:
    """The five limits, on Policy and (as overrides) on ApiKey: empty means no limit (on a key: the policy's)."""
    empty = "Empty: the policy's limit." if on_key else "Empty: no limit."
    return {
        "rpm_limit": models.PositiveIntegerField(
            null=True,
            blank=True,
            verbose_name="requests per minute",
            help_text=f"Requests admitted in any 60 seconds (a sliding window), shared by every worker. {empty}",
        ),
        "tpm_limit": models.PositiveIntegerField(
            null=True,
            blank=True,
            verbose_name="tokens per minute",
            help_text="Prompt + completion tokens in any 60 seconds. A request reserves an estimate (its prompt's "
            f"size and its output cap) and settles with the real usage when it ends. {empty}",
        ),
        "max_parallel_requests": models.PositiveIntegerField(
            null=True,
            blank=True,
            verbose_name="concurrent requests",
            help_text=f"Requests in flight at once, streams until they end. {empty}",
        ),
        "daily_budget_usd": models.DecimalField(
            max_digits=12,
            decimal_places=4,
            null=True,
            blank=True,
            verbose_name="daily budget (USD)",
            help_text="Spend per UTC day, from the price table. A request whose estimated cost would cross it "
            f"gets 429 insufficient_quota. {empty}",
        ),
        "monthly_budget_usd": models.DecimalField(
            max_digits=12,
            decimal_places=4,
            null=True,
            blank=True,
            verbose_name="monthly budget (USD)",
            help_text=f"Spend per calendar month (UTC). {empty}",
        ),
    }


class Policy(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True, help_text="An inactive policy passes requests through unchanged.")
    is_default = models.BooleanField(default=False, help_text="Applies to every API key that has no policy of its own.")
    version = models.PositiveIntegerField(default=0, editable=False)

    system_context = models.TextField(blank=True)
    system_context_mode = models.CharField(
        max_length=16, choices=SystemContextMode.choices, default=SystemContextMode.IF_MISSING
    )
    param_defaults = models.JSONField(default=_empty_dict, blank=True, help_text='e.g. {"temperature": 0.3}')
    param_overrides = models.JSONField(default=_empty_dict, blank=True, help_text='e.g. {"max_tokens": 2048}')
    model_rules = models.JSONField(
        default=_empty_list,
        blank=True,
        help_text='Per-model defaults, first match first: [{"pattern": "gpt-4*", "defaults": {"temperature": 0.3}}]',
    )
    max_tokens_ceiling = models.PositiveIntegerField(null=True, blank=True)
    allowed_models = models.JSONField(
        default=_empty_list, blank=True, help_text='Globs, e.g. ["gpt-4o*", "text-embedding-*"]. Empty allows all.'
    )
    model_aliases = models.JSONField(
        default=_empty_dict, blank=True, help_text='Client name to upstream name: {"fast": "gpt-4o-mini"}'
    )
    allowed_surfaces = models.JSONField(
        default=_empty_list,
        blank=True,
        help_text="The APIs this policy's keys may use, of: "
        + ", ".join(GOVERNED)
        + ". Empty allows all of them. Others get 403 endpoint_not_allowed.",
    )
    passthrough_paths = models.JSONField(
        default=_empty_list,
        blank=True,
        help_text='Other /v1 paths to forward as they are, as globs: ["/v1/files", "/v1/files/*"]. '
        "Closed by default (404). A passthrough path runs with the upstream's own key and escapes every "
        'rule here except the model check on a "model" in its JSON body: open only what you trust.',
    )
    embedding_default_model = models.CharField(max_length=200, blank=True)
    embedding_normalize_input = models.BooleanField(default=False)
    user_field = models.CharField(max_length=16, choices=UserFieldMode.choices, default=UserFieldMode.LEAVE)
    user_field_override = models.BooleanField(
        default=False, help_text="Replace a user value the client sent (otherwise it is kept)."
    )
    blocked_patterns = models.JSONField(
        default=_empty_list,
        blank=True,
        help_text='Regular expressions that reject a request: [{"name": "no-ssn", "pattern": "\\\\d{9}"}]',
    )
    response_redactions = models.JSONField(
        default=_empty_list,
        blank=True,
        help_text='Applied to answers: [{"pattern": "secret-\\\\w+", "replacement": "[redacted]"}]',
    )
    annotate_responses = models.BooleanField(default=False)
    annotation_extra = models.JSONField(default=_empty_dict, blank=True)
    audit_capture = models.CharField(max_length=16, choices=AuditCapture.choices, default=AuditCapture.FULL)
    audit_retention_days = models.PositiveIntegerField(null=True, blank=True)
    locals().update(limit_fields(on_key=False))

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    # The fields that make up a version's content, in the engine's vocabulary.
    CONTENT_FIELDS = (
        "system_context",
        "system_context_mode",
        "param_defaults",
        "param_overrides",
        "model_rules",
        "max_tokens_ceiling",
        "allowed_models",
        "model_aliases",
        "allowed_surfaces",
        "passthrough_paths",
        "embedding_default_model",
        "embedding_normalize_input",
        "user_field",
        "user_field_override",
        "blocked_patterns",
        "response_redactions",
        "annotate_responses",
        "annotation_extra",
        "audit_capture",
        "audit_retention_days",
        *LIMIT_FIELDS,
    )

    class Meta:
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_policy"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version})"

    def save(self, *args, **kwargs) -> None:
        """Every save is a new version, and that version's content is kept."""
        with transaction.atomic():
            if self.is_default:
                Policy.objects.filter(is_default=True).exclude(pk=self.pk).update(
                    is_default=False, updated_at=timezone.now()
                )
            self.version += 1
            super().save(*args, **kwargs)
            PolicyVersion.objects.create(policy=self, version=self.version, content=self.content())

    def content(self) -> dict:
        # Budgets as decimal strings: a version's content is JSON, and the amount must stay exact.
        return {field: _jsonable(getattr(self, field)) for field in self.CONTENT_FIELDS}

    def clean(self) -> None:
        errors = validate_policy_content(self.content())
        if errors:
            raise ValidationError({field: messages for field, messages in errors.items()})


class PolicyVersion(models.Model):
    """The content of one version of a policy, as it was when saved: audit records name it."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    content = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]
        constraints = [models.UniqueConstraint(fields=["policy", "version"], name="unique_policy_version")]

    def __str__(self) -> str:
        return f"{self.policy.name} v{self.version}"


class ApiKey(models.Model):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    # HMAC-SHA256 of the whole key with the server's pepper: the key itself is never stored.
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    policy = models.ForeignKey(
        Policy,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="api_keys",
        help_text="Empty: the default policy applies.",
    )
    is_active = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    locals().update(limit_fields(on_key=True))

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.is_active and (self.expires_at is None or self.expires_at > now)

    def limit_overrides(self) -> Limits:
        return Limits.from_values({name: getattr(self, name) for name in LIMIT_FIELDS})


class ModelPrice(models.Model):
    """USD per million tokens for the models a glob matches; the most specific pattern wins."""

    pattern = models.CharField(
        max_length=200,
        unique=True,
        help_text='A model name or glob, as the upstream names the model: "gpt-4o-mini", "gpt-4o-mini-*", '
        '"claude-sonnet-4*". The pattern with the most literal characters wins. Models no pattern matches have '
        "an unknown price: their requests cost 0 against budgets, and their records say the price was unknown.",
    )
    input_per_million = models.DecimalField(max_digits=12, decimal_places=4, verbose_name="input (USD / 1M tokens)")
    cached_input_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal(0),
        verbose_name="cached input (USD / 1M tokens)",
        help_text="Prompt tokens the provider served from its cache (OpenAI cached_tokens, Anthropic cache reads).",
    )
    output_per_million = models.DecimalField(max_digits=12, decimal_places=4, verbose_name="output (USD / 1M tokens)")
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["pattern"]
        verbose_name = "model price"

    def __str__(self) -> str:
        return f"{self.pattern}: ${self.input_per_million} in / ${self.output_per_million} out per 1M tokens"
