"""python manage.py create_api_key NAME [--policy NAME] [--expires-in-days N]: the key is the last line."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from policies.keys import api_key_create
from policies.models import Policy


class Command(BaseCommand):
    help = "Create an API key. The key is printed once, alone on the last line; it cannot be shown again."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--policy", help="Name of the policy for this key (default: the default policy).")
        parser.add_argument("--expires-in-days", type=int, help="Days until the key expires (default: never).")

    def handle(self, *args, name: str, policy: str | None, expires_in_days: int | None, **options):
        selected = None
        if policy:
            selected = Policy.objects.filter(name=policy).first()
            if selected is None:
                raise CommandError(f"No policy named {policy!r}.")
        if expires_in_days is not None and expires_in_days <= 0:
            raise CommandError("--expires-in-days must be a positive number of days.")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        api_key, raw_key = api_key_create(name=name, policy=selected, expires_at=expires_at)
        self.stderr.write(f"Created API key {api_key.name!r} ({api_key.prefix}…). Store it now: it is not shown again.")
        self.stdout.write(raw_key)
