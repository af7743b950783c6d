"""A key's limits: the policy's, each one overridable on the key. Pure: what is enforced lives in proxy.limiter."""

from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

# LiteLLM's names, which platform teams already know; on Policy and, as overrides, on ApiKey.
LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "max_parallel_requests", "daily_budget_usd", "monthly_budget_usd")
BUDGET_FIELDS = ("daily_budget_usd", "monthly_budget_usd")
# Spend is counted in whole nano-dollars: exact integers in Redis and in the audit log alike.
NANO = Decimal("0.000000001")
NANOS_PER_USD = 10**9


@dataclass(frozen=True, slots=True)
class Limits:
    """None: no limit of that kind."""

    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    daily_budget_usd: Decimal | None = None
    monthly_budget_usd: Decimal | None = None

    @property
    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in LIMIT_FIELDS)

    @property
    def counts_tokens(self) -> bool:
        return self.tpm_limit is not None

    @property
    def counts_spend(self) -> bool:
        return self.daily_budget_usd is not None or self.monthly_budget_usd is not None

    def overridden_by(self, overrides: "Limits") -> "Limits":
        """Each limit the key sets replaces the policy's; the others stay the policy's."""
        values = {f.name: getattr(overrides, f.name) for f in fields(self) if getattr(overrides, f.name) is not None}
        return Limits(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **values}) if values else self

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "Limits":
        """From model fields or a version's content (budgets there are decimal strings)."""
        return cls(
            rpm_limit=values.get("rpm_limit"),
            tpm_limit=values.get("tpm_limit"),
            max_parallel_requests=values.get("max_parallel_requests"),
            daily_budget_usd=_decimal(values.get("daily_budget_usd")),
            monthly_budget_usd=_decimal(values.get("monthly_budget_usd")),
        )


NO_LIMITS = Limits()


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def usd_to_nanos(value: Decimal) -> int:
    return int((value * NANOS_PER_USD).to_integral_value())


def nanos_to_usd(nanos: int) -> Decimal:
    return (Decimal(nanos) / NANOS_PER_USD).quantize(NANO)
