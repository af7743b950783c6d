"""Reads of the audit log: the records the API lists and the usage it aggregates."""

import math
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connections
from django.db.models import Aggregate, Avg, Count, F, FloatField, Max, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDay, TruncHour, TruncMonth

from policies.cache import policy_spec
from policies.limits import NO_LIMITS
from policies.models import ApiKey, Policy
from policies.pricing import CostStatus
from proxy.api.filters import BODY_FIELDS
from proxy.models import AuditRecord

NEWEST_FIRST = ("-created_at", "-id")
OLDEST_FIRST = ("created_at", "id")
BUCKETS = {"month": TruncMonth, "day": TruncDay, "hour": TruncHour}
USAGE_GROUP = ("bucket", "key_prefix", "model")
P95 = 0.95


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)."""

    function = "PERCENTILE_CONT"
    name = "PercentileCont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, *, fraction: float, **extra):
        # A float we own, not user input: safe to render into the SQL.
        super().__init__(expression, fraction=float(fraction), **extra)


def audit_record_list(*, bodies: bool = False, ordering: tuple[str, ...] = NEWEST_FIRST) -> QuerySet[AuditRecord]:
    """Every audit record, newest first; without the bodies unless asked, since they can weigh megabytes."""
    queryset = AuditRecord.objects.order_by(*ordering)
    return queryset if bodies else queryset.defer(*BODY_FIELDS)


def audit_usage_list(
    *, queryset: QuerySet[AuditRecord], since: datetime, until: datetime, bucket: str = "day"
) -> list[dict]:
    """Requests, errors, tokens and durations per time bucket, key prefix and requested model."""
    groups = (
        queryset.filter(created_at__gte=since, created_at__lt=until)
        .order_by()
        .annotate(bucket=BUCKETS[bucket]("created_at"), model=F("model_requested"))
        .values(*USAGE_GROUP)
    )
    aggregates = {
        "key_name": Max("key_name"),
        "requests": Count("id"),
        "errors": Count("id", filter=Q(status_code__gte=400)),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), Value(0)),
        "completion_tokens": Coalesce(Sum("completion_tokens"), Value(0)),
        "total_tokens": Coalesce(Sum("total_tokens"), Value(0)),
        "mean_duration_ms": Avg("duration_ms"),
        "spend_usd": Coalesce(Sum("cost_usd"), Value(Decimal(0))),
        "unpriced_requests": Count("id", filter=Q(cost_status=CostStatus.UNKNOWN_PRICE)),
    }
    in_database = has_percentile_cont(queryset.db)
    if in_database:
        aggregates["p95_duration_ms"] = PercentileCont("duration_ms", fraction=P95)
    rows = list(groups.annotate(**aggregates).order_by(*USAGE_GROUP))
    if not in_database:
        p95s = _p95_by_group(groups)
        for row in rows:
            row["p95_duration_ms"] = p95s.get(tuple(row[name] for name in USAGE_GROUP))
    return rows


def has_percentile_cont(database: str) -> bool:
    return connections[database].vendor == "postgresql"


def _p95_by_group(groups: QuerySet) -> dict[tuple, float]:
    # SQLite has no percentile aggregate; its databases are small (a newcomer's), so Python can sort.
    durations = defaultdict(list)
    rows = groups.filter(duration_ms__isnull=False).values_list(*USAGE_GROUP, "duration_ms")
    for *group, duration in rows.iterator():
        durations[tuple(group)].append(duration)
    return {group: percentile(sorted(values), P95) for group, values in durations.items()}


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks: what PostgreSQL's percentile_cont computes."""
    if not ordered:
        return None
    rank = fraction * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def period_starts(now: datetime) -> tuple[datetime, datetime]:
    """The start of the UTC day and of the UTC month that `now` is in: the periods budgets count."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


def key_spend(key_ids: list[int], now: datetime) -> dict[int, tuple[Decimal, Decimal]]:
    """Key id -> (spent today, spent this month) in USD, from the audit log's costs.

    By id, not prefix: a key whose secret was regenerated keeps its spend, as it keeps its limits' counts.
    """
    day, month = period_starts(now)
    rows = (
        AuditRecord.objects.filter(api_key_id__in=key_ids, created_at__gte=month)
        .order_by()
        .values("api_key_id")
        .annotate(
            month=Coalesce(Sum("cost_usd"), Value(Decimal(0))),
            day=Coalesce(Sum("cost_usd", filter=Q(created_at__gte=day)), Value(Decimal(0))),
        )
    )
    return {row["api_key_id"]: (row["day"], row["month"]) for row in rows}


def key_budget_list(now: datetime) -> list[dict]:
    """Each active key with a budget (its own or its policy's): the current day's and month's spend against it."""
    default = Policy.objects.filter(is_default=True, is_active=True).first()
    keys = ApiKey.objects.filter(is_active=True).select_related("policy").order_by("name", "pk")
    budgeted = []
    for key in keys:
        policy = key.policy if key.policy is not None and key.policy.is_active else default
        limits = (policy_spec(policy).limits if policy else NO_LIMITS).overridden_by(key.limit_overrides())
        if limits.counts_spend:
            budgeted.append((key, limits))
    spend = key_spend([key.pk for key, _ in budgeted], now)
    return [
        {
            "key_prefix": key.prefix,
            "key_name": key.name,
            "daily_budget_usd": limits.daily_budget_usd,
            "spent_today_usd": spend.get(key.pk, (Decimal(0), Decimal(0)))[0],
            "monthly_budget_usd": limits.monthly_budget_usd,
            "spent_this_month_usd": spend.get(key.pk, (Decimal(0), Decimal(0)))[1],
        }
        for key, limits in budgeted
    ]
