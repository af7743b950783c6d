"""Admin for API keys and policies."""

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from policies.keys import api_keys_revoke, key_issue
from policies.models import ApiKey, Policy, PolicyVersion


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "policy", "is_active", "expires_at", "last_used_at", "created_at")
    list_filter = ("is_active", "policy")
    search_fields = ("name", "prefix")
    list_select_related = ("policy",)
    readonly_fields = ("prefix", "created_at", "updated_at", "last_used_at")
    fields = ("name", "policy", "is_active", "expires_at", "prefix", "created_at", "updated_at", "last_used_at")
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
        ("User identification", {"fields": ("user_field", "user_field_override")}),
        ("Content rules", {"fields": ("blocked_patterns", "response_redactions")}),
        ("Response annotations", {"fields": ("annotate_responses", "annotation_extra")}),
        ("Audit", {"fields": ("audit_capture", "audit_retention_days")}),
        ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )
    inlines = (PolicyVersionInline,)

    @admin.display(description="API keys")
    def key_count(self, obj: Policy) -> int:
        return obj.api_keys.count()

    @admin.display(description="API keys using this policy")
    def keys_using(self, obj: Policy) -> str:
        keys = obj.api_keys.all()[:50] if obj.pk else []
        return format_html_join(", ", "{} ({}…)", ((key.name, key.prefix) for key in keys)) or "—"
