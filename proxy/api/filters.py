"""Query-string filters for the audit API: one FilterSet shared by the list, the exports and usage."""

import re
from typing import NamedTuple

import django_filters
from django import forms
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django_filters import rest_framework as filters

from policies.keys import VISIBLE_PREFIX_LENGTH
from proxy.models import AuditRecord

BODY_FIELDS = ("request_body", "forwarded_body", "response_body")
TRUE_VALUES = frozenset({"true", "1", "yes"})
FALSE_VALUES = frozenset({"false", "0", "no"})
KEY_PREFIX_MAX = AuditRecord._meta.get_field("key_prefix").max_length


class StatusRange(NamedTuple):
    low: int
    high: int  # exclusive


class StatusField(forms.CharField):
    """`404` (exact) or `4xx` (class), cleaned to a half-open range."""

    pattern = re.compile(r"^([1-5])(?:xx|\d\d)$", re.IGNORECASE)

    def to_python(self, value) -> StatusRange | None:
        value = super().to_python(value).strip()
        if not value:
            return None
        match = self.pattern.match(value)
        if not match:
            raise forms.ValidationError("Enter a status code such as 404 or a class such as 4xx (1xx to 5xx).")
        if value[1:].lower() == "xx":
            low = int(match.group(1)) * 100
            return StatusRange(low, low + 100)
        return StatusRange(int(value), int(value) + 1)


class KeyField(forms.CharField):
    """An API key's id (`12`) or the start of its prefix (`aip-AbCd1234`): an int or a str."""

    def to_python(self, value) -> int | str | None:
        value = super().to_python(value).strip()
        if not value:
            return None
        if value.isdigit():
            return int(value)
        # A whole key pasted here would end up in access logs; only its prefix is ever needed.
        if len(value) > KEY_PREFIX_MAX:
            raise forms.ValidationError(
                f"Give the key's id or its prefix (the first {VISIBLE_PREFIX_LENGTH} characters), never the key."
            )
        return value


class PolicyField(forms.CharField):
    """A policy's id (`3`) or its name: an int or a str."""

    def to_python(self, value) -> int | str | None:
        value = super().to_python(value).strip()
        if not value:
            return None
        return int(value) if value.isdigit() else value


class StrictBooleanField(forms.Field):
    """Unlike Django's NullBooleanField, a value it does not understand is an error, not "no filter"."""

    def to_python(self, value) -> bool | None:
        value = (value or "").strip().lower()
        if not value:
            return None
        if value in TRUE_VALUES:
            return True
        if value in FALSE_VALUES:
            return False
        raise forms.ValidationError("Enter true or false.")


class StatusFilter(filters.CharFilter):
    field_class = StatusField

    def filter(self, qs: QuerySet, value: StatusRange | None) -> QuerySet:
        if value is None:
            return qs
        return qs.filter(status_code__gte=value.low, status_code__lt=value.high)


class KeyFilter(filters.CharFilter):
    field_class = KeyField

    def filter(self, qs: QuerySet, value: int | str | None) -> QuerySet:
        if value is None:
            return qs
        if isinstance(value, int):
            return qs.filter(api_key_id=value)
        # A whole prefix is an equality the audit_key_time index serves; LIKE 'x%' is not, outside the C collation.
        if len(value) == VISIBLE_PREFIX_LENGTH:
            return qs.filter(key_prefix=value)
        return qs.filter(key_prefix__startswith=value)


class PolicyFilter(filters.CharFilter):
    field_class = PolicyField

    def filter(self, qs: QuerySet, value: int | str | None) -> QuerySet:
        if value is None:
            return qs
        if isinstance(value, int):
            return qs.filter(policy_id=value)
        return qs.filter(policy_name=value)


class StrictBooleanFilter(django_filters.BooleanFilter):
    # Not the rest_framework BooleanFilter: its widget reads an unknown value as "no filter" before the field sees it.
    field_class = StrictBooleanField


class IntegerFilter(filters.NumberFilter):
    field_class = forms.IntegerField


class AuditScopeFilter(filters.FilterSet):
    """Who, what and when: the filters that make sense for records and for usage alike."""

    key = KeyFilter(help_text="API key id (`12`) or key prefix (`aip-AbCd1234`, or its start).")
    policy = PolicyFilter(help_text="Policy id or name (the name recorded at request time).")
    policy_version = IntegerFilter(field_name="policy_version", min_value=0)
    model = filters.CharFilter(method="filter_model", help_text="Requested model or the model the upstream reported.")
    endpoint = filters.CharFilter(
        field_name="endpoint",
        help_text="`chat`, `completions`, `responses`, `responses_object`, `messages`, `messages_count_tokens`, "
        "`embeddings`, ...",
    )
    status = StatusFilter(help_text="HTTP status: exact (`404`) or class (`4xx`).")
    outcome = filters.ChoiceFilter(field_name="outcome", choices=AuditRecord.Outcome.choices)
    stream = StrictBooleanFilter(field_name="stream")
    created_after = filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="ISO 8601, inclusive."
    )
    created_before = filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="ISO 8601, exclusive."
    )

    class Meta:
        model = AuditRecord
        fields: list[str] = []

    def filter_model(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(model_requested=value) | Q(model_upstream=value))


class AuditRecordFilter(AuditScopeFilter):
    """The audit list's filters: the scope plus the ones that pick out single records."""

    request_id = filters.CharFilter(field_name="request_id")
    min_duration_ms = filters.NumberFilter(field_name="duration_ms", lookup_expr="gte", min_value=0)
    q = filters.CharFilter(
        method="search_bodies",
        help_text="Case-insensitive text search in the request, forwarded and response bodies. "
        "No index serves it: on PostgreSQL it scans the records the other filters leave, so narrow those first.",
    )

    def search_bodies(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        condition = Q()
        for field in BODY_FIELDS:
            condition |= Q(**{f"{field}_text__icontains": value})
        annotations = {f"{field}_text": Cast(field, TextField()) for field in BODY_FIELDS}
        return queryset.alias(**annotations).filter(condition)


class AuditUsageFilter(AuditScopeFilter):
    """Usage's filters: the scope plus the bucket size (which the view reads, not the queryset)."""

    bucket = filters.ChoiceFilter(
        choices=[("month", "month"), ("day", "day"), ("hour", "hour")],
        method="keep",
        empty_label=None,
        help_text="Aggregate per `month`, `day` (default) or `hour`, in UTC.",
    )

    def keep(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset
