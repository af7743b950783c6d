"""How audit records and usage rows look in the API: metadata in lists, everything in detail."""

from rest_framework import serializers

from proxy.api.filters import BODY_FIELDS
from proxy.models import AuditRecord

# Everything but the bodies, in the order a reader scans a record.
METADATA_FIELDS = (
    "id",
    "record_id",
    "request_id",
    "created_at",
    "api_key",
    "key_prefix",
    "key_name",
    "policy",
    "policy_name",
    "policy_version",
    "client_ip",
    "user_agent",
    "method",
    "path",
    "endpoint",
    "model_requested",
    "model_upstream",
    "stream",
    "stored_id",
    "status_code",
    "upstream_status",
    "outcome",
    "error_type",
    "error_code",
    "error_message",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "duration_ms",
    "upstream_ms",
    "ttfb_ms",
    "capture",
    "bodies_truncated",
    "modifications",
)
ALL_FIELDS = METADATA_FIELDS + BODY_FIELDS


class AuditRecordListSerializer(serializers.ModelSerializer):
    # Ids, not relations: the key or policy may be gone (no database constraint), and a page
    # must not cost a query per row.
    api_key = serializers.IntegerField(source="api_key_id", read_only=True, allow_null=True)
    policy = serializers.IntegerField(source="policy_id", read_only=True, allow_null=True)

    class Meta:
        model = AuditRecord
        fields = METADATA_FIELDS
        read_only_fields = METADATA_FIELDS


class AuditRecordDetailSerializer(AuditRecordListSerializer):
    class Meta(AuditRecordListSerializer.Meta):
        fields = ALL_FIELDS
        read_only_fields = ALL_FIELDS


class UsageRowSerializer(serializers.Serializer):
    bucket = serializers.DateTimeField(help_text="Start of the day or hour (UTC).")
    key_prefix = serializers.CharField(help_text="Empty for requests whose key was not recognised.")
    key_name = serializers.CharField()
    model = serializers.CharField(help_text="The model the client requested.")
    requests = serializers.IntegerField()
    errors = serializers.IntegerField(help_text="Responses with status 400 or above.")
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    mean_duration_ms = serializers.FloatField(allow_null=True)
    p95_duration_ms = serializers.FloatField(allow_null=True)
    spend_usd = serializers.DecimalField(
        max_digits=18, decimal_places=9, help_text="The records' costs, from the price table in force then."
    )
    unpriced_requests = serializers.IntegerField(help_text="Requests whose model had no price (counted as 0).")


class BudgetSerializer(serializers.Serializer):
    key_prefix = serializers.CharField()
    key_name = serializers.CharField()
    daily_budget_usd = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True)
    spent_today_usd = serializers.DecimalField(max_digits=18, decimal_places=9, help_text="This UTC day.")
    monthly_budget_usd = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True)
    spent_this_month_usd = serializers.DecimalField(max_digits=18, decimal_places=9, help_text="This UTC month.")


class UsageSerializer(serializers.Serializer):
    created_after = serializers.DateTimeField()
    created_before = serializers.DateTimeField()
    bucket = serializers.ChoiceField(choices=["month", "day", "hour"])
    results = UsageRowSerializer(many=True)
    budgets = BudgetSerializer(
        many=True, help_text="Every active key with a budget: the current day's and month's spend against it."
    )
