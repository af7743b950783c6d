"""Prices for a handful of common models (USD per million tokens, list prices as of 2026-12), to start from.

Edit them in the admin (Model prices); a model no pattern matches has an unknown price.
"""

from decimal import Decimal

from django.db import migrations

# pattern: (input, cached input, output)
SEED = {
    "gpt-4o": ("2.50", "1.25", "10.00"),
    "gpt-4o-2024-*": ("2.50", "1.25", "10.00"),
    "gpt-4o-mini": ("0.15", "0.075", "0.60"),
    "gpt-4o-mini-*": ("0.15", "0.075", "0.60"),
    "gpt-4.1": ("2.00", "0.50", "8.00"),
    "gpt-4.1-mini*": ("0.40", "0.10", "1.60"),
    "gpt-4.1-nano*": ("0.10", "0.025", "0.40"),
    "gpt-5": ("1.25", "0.125", "10.00"),
    "gpt-5-mini*": ("0.25", "0.025", "2.00"),
    "o4-mini*": ("1.10", "0.275", "4.40"),
    "text-embedding-3-small": ("0.02", "0", "0"),
    "text-embedding-3-large": ("0.13", "0", "0"),
    "claude-sonnet-4*": ("3.00", "0.30", "15.00"),
    "claude-opus-4*": ("15.00", "1.50", "75.00"),
    "claude-haiku-4*": ("1.00", "0.10", "5.00"),
    "claude-3-5-haiku*": ("0.80", "0.08", "4.00"),
}


def seed(apps, schema_editor):
    ModelPrice = apps.get_model("policies", "ModelPrice")
    for pattern, (given, cached, output) in SEED.items():
        ModelPrice.objects.get_or_create(
            pattern=pattern,
            defaults={
                "input_per_million": Decimal(given),
                "cached_input_per_million": Decimal(cached),
                "output_per_million": Decimal(output),
            },
        )


def unseed(apps, schema_editor):
    apps.get_model("policies", "ModelPrice").objects.filter(pattern__in=SEED).delete()


class Migration(migrations.Migration):
    dependencies = [("policies", "0004_limits_and_prices")]
    operations = [migrations.RunPython(seed, unseed)]
