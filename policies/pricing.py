"""What a request costs: its usage (from any surface's answer), the price in force for its model, the product.

Pure: the price table is built from ModelPrice rows by the config cache, and the request path asks it.
"""

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from policies.limits import NANO
from policies.spec import compile_glob

PER_MILLION = Decimal(1_000_000)
# PositiveIntegerField's range: larger counts are an upstream's nonsense, not usage.
TOKENS_MAX = 2**31 - 1
# A rough rule that holds for English and code in the common tokenizers; only ever an estimate.
CHARS_PER_TOKEN = 4


class CostStatus:
    PRICED = "priced"  # from the upstream's usage and a price row
    ESTIMATED = "estimated"  # the usage was not reported (a cut stream): estimated from what was sent and received
    UNKNOWN_PRICE = "unknown_price"  # no price row matches the model: spend counts 0
    NO_USAGE = "no_usage"  # nothing was used (refused, failed, or a surface without tokens)


@dataclass(frozen=True, slots=True)
class Price:
    id: int
    pattern: str
    input_per_million: Decimal
    cached_input_per_million: Decimal
    output_per_million: Decimal

    def snapshot(self) -> dict[str, Any]:
        """The rates as the record keeps them: a later edit of the row does not change what was charged."""
        return {
            "id": self.id,
            "pattern": self.pattern,
            "input_per_million": str(self.input_per_million),
            "cached_input_per_million": str(self.cached_input_per_million),
            "output_per_million": str(self.output_per_million),
        }


class PriceTable:
    """Model glob -> price; the most specific pattern (the most literal characters) wins."""

    def __init__(self, prices: list[Price] = ()) -> None:
        ranked = sorted(prices, key=lambda p: (-literal_characters(p.pattern), p.pattern))
        self._ranked = [(compile_glob(p.pattern), p) for p in ranked]
        self._memo: dict[str, Price | None] = {}

    def price_for(self, model: str | None) -> Price | None:
        if not model:
            return None
        if model in self._memo:
            return self._memo[model]
        found = next((price for regex, price in self._ranked if regex.fullmatch(model)), None)
        if len(self._memo) < 10_000:  # model names come from clients and upstreams: bounded
            self._memo[model] = found
        return found


EMPTY_PRICES = PriceTable()
_GLOB_SYNTAX = re.compile(r"\[[^\]]*\]|[*?]")


def literal_characters(pattern: str) -> int:
    """How specific a glob is: its characters that match only themselves ("*", "?" and "[...]" do not)."""
    return len(_GLOB_SYNTAX.sub("", pattern))


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_from(body: Any) -> Usage | None:
    """The usage an answer reports, in any surface's words; None when it reports none."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _count(usage.get("completion_tokens", usage.get("output_tokens")))
    if prompt is None and completion is None:
        return None
    prompt, completion = prompt or 0, completion or 0
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    # Anthropic counts cache reads and writes apart from input_tokens: all of them are prompt.
    cache_read = _count(usage.get("cache_read_input_tokens"))
    cache_write = _count(usage.get("cache_creation_input_tokens"))
    if cache_read is not None or cache_write is not None:
        prompt += (cache_read or 0) + (cache_write or 0)
        cached = cache_read
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=min(cached or 0, prompt))


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= TOKENS_MAX:
        return value
    return None


def cost_of(usage: Usage, price: Price) -> Decimal:
    """USD, to the nano-dollar (what budgets count in)."""
    uncached = usage.prompt_tokens - usage.cached_tokens
    total = (
        uncached * price.input_per_million
        + usage.cached_tokens * price.cached_input_per_million
        + usage.completion_tokens * price.output_per_million
    ) / PER_MILLION
    return total.quantize(NANO)


def estimated_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def text_chars(texts) -> int:
    return sum(len(text) for text in texts)
