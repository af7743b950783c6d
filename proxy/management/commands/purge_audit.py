"""purge_audit: delete audit records past their retention, a few thousand per short transaction."""

import argparse
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from policies.models import Policy
from proxy.models import AuditRecord

AGE = re.compile(r"^(\d+)([dh])$")
UNITS = {"d": "days", "h": "hours"}


@dataclass(frozen=True, slots=True)
class RetentionScope:
    label: str
    records: QuerySet


def parse_age(value: str) -> timedelta:
    match = AGE.match(value.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r}: give days or hours, such as 90d or 12h")
    return timedelta(**{UNITS[match[2]]: int(match[1])})


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) == 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give a positive whole number")
    return int(value)


def describe_age(age: timedelta) -> str:
    amount, unit = (age // timedelta(hours=1), "hour") if age % timedelta(days=1) else (age.days, "day")
    return f"{amount} {unit}{'' if amount == 1 else 's'}"


def retention_scopes(*, older_than: timedelta, now: datetime) -> list[RetentionScope]:
    """The global retention for records whose policy sets none (or that have none), then one per policy that does."""
    own = list(
        Policy.objects.filter(audit_retention_days__isnull=False).values_list("id", "name", "audit_retention_days")
    )
    scopes = [
        RetentionScope(
            f"older than {describe_age(older_than)} (records without a retention of their own)",
            AuditRecord.objects.filter(created_at__lt=now - older_than).exclude(
                policy_id__in=[policy_id for policy_id, _, _ in own]
            ),
        )
    ]
    for policy_id, name, days in own:
        cutoff = now - timedelta(days=days)
        label = f"of policy {name!r} older than {describe_age(timedelta(days=days))} (the policy's own retention)"
        scopes.append(RetentionScope(label, AuditRecord.objects.filter(policy_id=policy_id, created_at__lt=cutoff)))
    return scopes


def audit_records_purge(*, records: QuerySet, batch_size: int) -> Iterator[int]:
    """Delete the records oldest first, one short transaction per batch; yields each batch's count.

    One giant DELETE is one long transaction: it holds back vacuum on every table while it runs,
    and an interruption rolls all of it back. Batches commit as they go.
    """
    floor = None
    while True:
        batch = records.order_by("created_at", "id")
        if floor is not None:
            # Everything older than floor is gone: start the next scan there, not at dead index entries.
            batch = batch.filter(created_at__gte=floor)
        rows = list(batch.values_list("id", "created_at")[:batch_size])
        if not rows:
            return
        with transaction.atomic():
            deleted, _ = AuditRecord.objects.filter(id__in=[record_id for record_id, _ in rows]).delete()
        yield deleted
        floor = rows[-1][1]


class Command(BaseCommand):
    help = "Delete audit records older than their retention: the policy's own if it sets one, else --older-than."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than",
            type=parse_age,
            default=timedelta(days=settings.AUDIT_RETENTION_DAYS),
            help=f"Age such as 90d or 12h (default: AUDIT_RETENTION_DAYS, {settings.AUDIT_RETENTION_DAYS}d).",
        )
        parser.add_argument("--batch-size", type=positive_int, default=5000, help="Records per DELETE (default 5000).")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args, older_than: timedelta, batch_size: int, dry_run: bool, **options) -> None:
        self.verbosity = options["verbosity"]
        scopes = retention_scopes(older_than=older_than, now=timezone.now())
        verb = "Would delete" if dry_run else "Deleted"
        total = 0
        for scope in scopes:
            count = scope.records.count() if dry_run else self.purge(scope, batch_size)
            total += count
            self.stdout.write(f"{verb} {count} audit records {scope.label}.")
        self.stdout.write(self.style.SUCCESS(f"{verb} {total} audit records in total."))

    def purge(self, scope: RetentionScope, batch_size: int) -> int:
        count = 0
        for deleted in audit_records_purge(records=scope.records, batch_size=batch_size):
            count += deleted
            if self.verbosity >= 2:
                self.stdout.write(f"  deleted a batch of {deleted} ({count} so far)")
        return count
