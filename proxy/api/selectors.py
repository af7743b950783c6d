"""Reads of the audit log: the records the API lists and the usage it aggregates."""

import math
from collections import defaultdict
from datetime import datetime

from django.db import connections
from django.db.models import Aggregate, Avg, Count, F, FloatField, Max, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDay, TruncHour

from proxy.api.filters import BODY_FIELDS
from proxy.models import AuditRecord

NEWEST_FIRST = ("-created_at", "-id")
OLDEST_FIRST = ("created_at", "id")
BUCKETS = {"day": TruncDay, "hour": TruncHour}
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
