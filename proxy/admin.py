"""Read-only admin for the audit log: browse, filter and read records, never change them."""

import json
from datetime import date, datetime, time, timedelta

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.http import HttpResponseBadRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from policies.admin import ApiKeyAdmin
from policies.keys import VISIBLE_PREFIX_LENGTH
from policies.models import ApiKey, Policy
from proxy.api.filters import BODY_FIELDS
from proxy.api.selectors import period_starts
from proxy.models import AuditRecord

# Filter choices drawn from the audit table look only at this many newest records: a DISTINCT
# over the whole table would scan it on every page load.
RECENT_SAMPLE = 10_000
# Below this many rows an exact count is cheap enough.
ESTIMATE_ABOVE = 100_000


class EstimatedCountPaginator(Paginator):
    """On PostgreSQL an unfiltered list is counted from the planner's statistics, not by COUNT(*)."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        connection = connections[queryset.db]
        if connection.vendor != "postgresql" or queryset.query.where:
            return super().count
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [queryset.model._meta.db_table])
            row = cursor.fetchone()
        estimate = row[0] if row else -1
        return estimate if estimate > ESTIMATE_ABOVE else super().count


class CalendarQuerySet(QuerySet):
    """datetimes() from the first and last record rather than a DISTINCT over every row.

    The date hierarchy calls it on each changelist load; on a million records the DISTINCT took
    220 ms of a 290 ms page. The price: a month or day without records is listed too (and shows none).
    """

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        day, last = timezone.localtime(bounds["first"]).date(), timezone.localtime(bounds["last"]).date()
        days = []
        while day <= last:
            days.append(day)
            day += timedelta(days=1)
        starts = sorted({calendar_start(day, kind) for day in days}, reverse=order == "DESC")
        return [datetime.combine(start, time.min, tzinfo=timezone.get_current_timezone()) for start in starts]


def calendar_start(day: date, kind: str) -> date:
    if kind == "year":
        return day.replace(month=1, day=1)
    return day.replace(day=1) if kind == "month" else day


class AuditChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        # The list shows no bodies, and a page of 100 records with theirs can weigh megabytes.
        queryset = super().get_queryset(request, exclude_parameters).defer(*BODY_FIELDS)
        return CalendarQuerySet(model=queryset.model, query=queryset.query, using=queryset.db)


def recent_values(field: str) -> list:
    newest = AuditRecord.objects.order_by("-created_at").values_list(field, flat=True)[:RECENT_SAMPLE]
    return sorted({value for value in newest if value not in (None, "")})


class AuditListFilter(admin.SimpleListFilter):
    """A list filter whose chosen value keeps filtering even when it is no longer offered."""

    def options(self) -> list[tuple]:
        raise NotImplementedError

    def filter(self, queryset: QuerySet, value: str) -> QuerySet:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        options = self.options()
        # A deleted key or a model not seen lately must still filter (a filter without choices is dropped).
        selected = self.value()
        if selected and all(str(value) != selected for value, _ in options):
            options.append((selected, selected))
        return options

    def queryset(self, request, queryset):
        return self.filter(queryset, self.value()) if self.value() else queryset


class KeyPrefixFilter(AuditListFilter):
    title = "API key"
    parameter_name = "key_prefix"

    def options(self) -> list[tuple]:
        # From the keys table (small); records of a deleted key are found by searching its prefix.
        return [(prefix, f"{name} ({prefix}…)") for prefix, name in ApiKey.objects.values_list("prefix", "name")]

    def filter(self, queryset: QuerySet, value: str) -> QuerySet:
        return queryset.filter(key_prefix=value)


class PolicyFilter(AuditListFilter):
    title = "policy"
    parameter_name = "policy"

    def options(self) -> list[tuple]:
        # By id, which the audit_policy_time index serves and which survives a rename.
        return list(Policy.objects.order_by("name").values_list("id", "name"))

    def filter(self, queryset: QuerySet, value: str) -> QuerySet:
        # An int when the admin counts facets ("Show counts"), a string from the query otherwise.
        value = str(value)
        return queryset.filter(policy_id=int(value)) if value.isdigit() else queryset.none()


class ModelFilter(AuditListFilter):
    title = "model"
    parameter_name = "model"

    def options(self) -> list[tuple]:
        return [(model, model) for model in recent_values("model_requested")]

    def filter(self, queryset: QuerySet, value: str) -> QuerySet:
        return queryset.filter(Q(model_requested=value) | Q(model_upstream=value))


class StatusFilter(AuditListFilter):
    title = "status"
    parameter_name = "status"

    def options(self) -> list[tuple]:
        classes = [(f"{digit}xx", f"{digit}xx") for digit in (2, 4, 5)]
        return classes + [(str(code), str(code)) for code in recent_values("status_code")]

    def filter(self, queryset: QuerySet, value: str) -> QuerySet:
        if value[:1].isdigit() and value[1:] == "xx":
            low = int(value[0]) * 100
            return queryset.filter(status_code__gte=low, status_code__lt=low + 100)
        return queryset.filter(status_code=int(value)) if value.isdigit() else queryset.none()


def pretty_json(value) -> str:
    if value is None:
        return "—"
    return format_html(
        '<pre style="white-space: pre-wrap; max-height: 40em; overflow: auto">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False),
    )


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    def changelist_view(self, request, extra_context=None):
        # PostgreSQL text cannot hold NUL: a filter value with one could match nothing, and would fail the query.
        if any("\x00" in value for values in request.GET.lists() for value in values[1]):
            return HttpResponseBadRequest("A filter value must not contain a NUL character.")
        return super().changelist_view(request, extra_context)

    list_display = (
        "created_at",
        "request_id",
        "key_prefix",
        "key_name",
        "policy_name",
        "policy_version",
        "endpoint",
        "model_requested",
        "stream",
        "status_code",
        "outcome",
        "duration_ms",
    )
    list_filter = (KeyPrefixFilter, PolicyFilter, ModelFilter, StatusFilter, "outcome", "stream")
    date_hierarchy = "created_at"
    search_fields = ("request_id", "key_prefix")
    search_help_text = "An exact request id, or an API key prefix (aip-…)."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    actions = None
    fieldsets = (
        (None, {"fields": ("created_at", "request_id", "record_id", "outcome", "status_code", "upstream_status")}),
        ("Who", {"fields": ("key_prefix", "key_name", "api_key_id", "policy_name", "policy_version", "policy_id")}),
        ("Client", {"fields": ("client_ip", "user_agent", "method", "path", "endpoint")}),
        ("Model", {"fields": ("model_requested", "model_upstream", "stream", "stored_id")}),
        ("Error", {"fields": ("error_type", "error_code", "error_message")}),
        (
            "Usage and timings",
            {"fields": ("prompt_tokens", "completion_tokens", "total_tokens", "duration_ms", "upstream_ms", "ttfb_ms")},
        ),
        ("Cost", {"fields": ("cost_usd", "cost_status", "cached_tokens", "price")}),
        (
            "Bodies",
            {
                "fields": (
                    "capture",
                    "bodies_truncated",
                    "modifications_json",
                    "request_body_json",
                    "forwarded_body_json",
                    "response_body_json",
                )
            },
        ),
    )
    readonly_fields = (
        "api_key_id",
        "policy_id",
        "modifications_json",
        "request_body_json",
        "forwarded_body_json",
        "response_body_json",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_changelist(self, request, **kwargs):
        return AuditChangeList

    def get_search_results(self, request, queryset, search_term):
        # The admin's own lookups are case-insensitive (UPPER() on both sides), which no index serves;
        # request ids and key prefixes are case-sensitive anyway.
        term = search_term.strip()
        if not term:
            return queryset, False
        if len(term) >= VISIBLE_PREFIX_LENGTH:
            by_key = Q(key_prefix=term[:VISIBLE_PREFIX_LENGTH])
        else:
            by_key = Q(key_prefix__startswith=term)
        return queryset.filter(Q(request_id=term) | by_key), False

    @admin.display(description="API key id")
    def api_key_id(self, obj: AuditRecord):
        # The id only: the key may have been deleted since (no database constraint), so never follow it.
        return obj.api_key_id

    @admin.display(description="Policy id")
    def policy_id(self, obj: AuditRecord):
        return obj.policy_id

    @admin.display(description="Modifications")
    def modifications_json(self, obj: AuditRecord) -> str:
        return pretty_json(obj.modifications)

    @admin.display(description="Request (as received)")
    def request_body_json(self, obj: AuditRecord) -> str:
        return pretty_json(obj.request_body)

    @admin.display(description="Request (as forwarded)")
    def forwarded_body_json(self, obj: AuditRecord) -> str:
        return pretty_json(obj.forwarded_body)

    @admin.display(description="Response")
    def response_body_json(self, obj: AuditRecord) -> str:
        return pretty_json(obj.response_body)


class ApiKeyWithSpendAdmin(ApiKeyAdmin):
    """The key admin, with each key's spend this UTC day and month next to its budgets (from the audit log,
    which lives here in proxy/, so the key admin of policies/ gains it here)."""

    list_display = (*ApiKeyAdmin.list_display[:3], "spend_today", "spend_this_month", *ApiKeyAdmin.list_display[3:])
    readonly_fields = (*ApiKeyAdmin.readonly_fields, "spend_today", "spend_this_month")
    fieldsets = (
        *ApiKeyAdmin.fieldsets[:2],
        ("Spend", {"fields": ("spend_today", "spend_this_month")}),
        *ApiKeyAdmin.fieldsets[2:],
    )

    def get_queryset(self, request):
        day, month = period_starts(timezone.now())
        return super().get_queryset(request).annotate(spent_today=_spent_since(day), spent_month=_spent_since(month))

    @admin.display(description="spend today (UTC)")
    def spend_today(self, obj: ApiKey) -> str:
        return _against(getattr(obj, "spent_today", None), _budget(obj, "daily_budget_usd"))

    @admin.display(description="spend this month (UTC)")
    def spend_this_month(self, obj: ApiKey) -> str:
        return _against(getattr(obj, "spent_month", None), _budget(obj, "monthly_budget_usd"))


def _spent_since(since: datetime) -> Subquery:
    records = AuditRecord.objects.filter(api_key_id=OuterRef("pk"), created_at__gte=since).order_by()
    return Subquery(records.values("api_key_id").annotate(total=Sum("cost_usd")).values("total")[:1])


def _budget(key: ApiKey, field: str):
    own = getattr(key, field)
    return own if own is not None else getattr(key.policy, field, None)


def _against(spent, budget) -> str:
    spent_text = f"${(spent or 0):.2f}"
    return f"{spent_text} of ${budget:.2f}" if budget is not None else spent_text


admin.site.unregister(ApiKey)
admin.site.register(ApiKey, ApiKeyWithSpendAdmin)
