"""Admin for API keys and policies."""

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html, format_html_join

from policies.cache import policy_spec
from policies.keys import api_keys_revoke, key_issue
from policies.limits import LIMIT_FIELDS
from policies.models import ApiKey, ModelPrice, Policy, PolicyVersion
from policies.preview import PREVIEW_ENDPOINTS, SAMPLE_BODY, policy_preview


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "policy", "is_active", "expires_at", "last_used_at", "created_at")
    list_filter = ("is_active", "policy")
    search_fields = ("name", "prefix")
    list_select_related = ("policy",)
    readonly_fields = ("prefix", "created_at", "updated_at", "last_used_at")
    fieldsets = (
        (None, {"fields": ("name", "policy", "is_active", "expires_at", "prefix")}),
        (
            "Limits (overrides)",
            {
                "fields": LIMIT_FIELDS,
                "description": "Each limit set here replaces the policy's for this key; empty ones keep the "
                "policy's. Counters belong to the key itself, and survive a new secret.",
            },
        ),
        ("History", {"fields": ("created_at", "updated_at", "last_used_at")}),
    )
    actions = ("revoke",)

    def save_model(self, request, obj, form, change):
        raw_key = None if change else key_issue(obj)
        super().save_model(request, obj, form, change)
        if raw_key:
            messages.warning(
                request,
                format_html(
                    "The new API key is <code style='user-select:all'>{}</code> — copy it now: it is not shown again.",
                    raw_key,
                ),
            )

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request, queryset):
        count = api_keys_revoke(queryset=queryset)
        self.message_user(request, f"Revoked {count} API key(s). They stop working within seconds.")


class PolicyVersionInline(admin.TabularInline):
    model = PolicyVersion
    fields = ("version", "created_at", "content")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    max_num = 0


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "is_active", "is_default", "key_count", "updated_at")
    list_filter = ("is_active", "is_default")
    search_fields = ("name", "description")
    readonly_fields = ("version", "keys_using", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "is_active", "is_default", "version", "keys_using")}),
        ("System context", {"fields": ("system_context", "system_context_mode")}),
        (
            "Parameters",
            {"fields": ("param_defaults", "param_overrides", "model_rules", "max_tokens_ceiling")},
        ),
        (
            "Models",
            {"fields": ("allowed_models", "model_aliases", "embedding_default_model", "embedding_normalize_input")},
        ),
        ("Surfaces and paths", {"fields": ("allowed_surfaces", "passthrough_paths")}),
        ("User identification", {"fields": ("user_field", "user_field_override")}),
        ("Content rules", {"fields": ("blocked_patterns", "response_redactions")}),
        ("Response annotations", {"fields": ("annotate_responses", "annotation_extra")}),
        (
            "Limits and budgets",
            {
                "fields": LIMIT_FIELDS,
                "description": "For every key using this policy, each on its own (a key may override any of them). "
                "Over a limit: 429 rate_limit_exceeded; over a budget: 429 insufficient_quota; both with "
                "Retry-After and OpenAI's x-ratelimit-* headers. Shared by every worker and instance through "
                "Redis (REDIS_URL); without it, each process counts on its own.",
            },
        ),
        ("Audit", {"fields": ("audit_capture", "audit_retention_days")}),
        ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )
    inlines = (PolicyVersionInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(key_total=Count("api_keys"))

    @admin.display(description="API keys", ordering="key_total")
    def key_count(self, obj: Policy) -> int:
        return obj.key_total

    def get_urls(self):
        preview = self.admin_site.admin_view(self.preview_view)
        return [path("<int:pk>/preview/", preview, name="policies_policy_preview"), *super().get_urls()]

    def preview_view(self, request, pk: int):
        """Run the saved policy over a pasted request body; nothing is sent anywhere."""
        policy = get_object_or_404(Policy, pk=pk)
        if not self.has_view_permission(request, policy):
            raise PermissionDenied
        endpoint = request.POST.get("endpoint")
        if endpoint not in dict(PREVIEW_ENDPOINTS):
            endpoint = PREVIEW_ENDPOINTS[0][0]
        body = request.POST.get("body") or json.dumps(SAMPLE_BODY, indent=2)
        preview = None
        if request.method == "POST":
            preview = policy_preview(spec=policy_spec(policy), endpoint=endpoint, body_text=body)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "policy": policy,
            "endpoints": PREVIEW_ENDPOINTS,
            "endpoint": endpoint,
            "body": body,
            "preview": preview,
            "title": f"Preview {policy.name}",
        }
        return TemplateResponse(request, "admin/policies/policy/preview.html", context)

    @admin.display(description="API keys using this policy")
    def keys_using(self, obj: Policy) -> str:
        keys = obj.api_keys.all()[:50] if obj.pk else []
        return format_html_join(", ", "{} ({}…)", ((key.name, key.prefix) for key in keys)) or "—"


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("pattern", "input_per_million", "cached_input_per_million", "output_per_million", "updated_at")
    search_fields = ("pattern",)
    fields = ("pattern", "input_per_million", "cached_input_per_million", "output_per_million")
