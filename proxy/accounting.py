"""Limits and spend for one exchange: admitted (or refused) before it goes upstream, priced and settled when it ends."""

import uuid
from decimal import Decimal

from django.conf import settings

from policies.cache import config_cache
from policies.limits import usd_to_nanos
from policies.pricing import CostStatus, Usage, cost_of, estimated_tokens, usage_from
from policies.surfaces import BY_NAME, Surface
from proxy.errors import ProxyError
from proxy.exchange import Exchange
from proxy.limiter import LimiterUnavailable, Verdict, limiter

HEADER_PREFIX = "x-ratelimit-"
REASONS = {
    "rpm": ("requests", "requests per minute (RPM)"),
    "tpm": ("tokens", "tokens per minute (TPM)"),
    "parallel": ("requests", "concurrent requests"),
}


class RateLimited(ProxyError):
    """429 in OpenAI's shape, with Retry-After and the key's rate-limit headers."""

    def __init__(  # noqa: PLR0913
        self,
        *,
        limit: str,
        message: str,
        type: str,
        code: str,
        retry_after: int,
        headers: dict[str, str],  # noqa: A002
    ) -> None:
        super().__init__(status=429, message=message, type=type, code=code)
        self.limit = limit  # which one refused: rpm, tpm, parallel, daily_budget, monthly_budget
        self.headers = {**headers, "Retry-After": str(max(retry_after, 1))}


def limits_unavailable() -> ProxyError:
    return ProxyError(
        status=503,
        message="Rate limits cannot be checked right now (their store is unreachable); try again shortly.",
        type="server_error",
        code="limits_unavailable",
    )


# --- before forwarding ---------------------------------------------------------------------------


async def admit(exchange: Exchange, surface: Surface) -> None:
    """Reserves this request against its key's limits, or raises RateLimited; no round trip without limits."""
    key = exchange.key
    if key is None or not key.limits.any:
        return
    limits = key.limits
    tokens = estimate_tokens(exchange, surface) if limits.counts_tokens or limits.counts_spend else 0
    nanos = usd_to_nanos(estimated_cost(exchange, tokens)) if limits.counts_spend else 0
    try:
        verdict, reservation = await limiter.reserve(key.key_id, limits, tokens, nanos, member=uuid.uuid4().hex)
    except LimiterUnavailable:
        raise limits_unavailable() from None
    exchange.rate_limit_headers = headers_for(limits, verdict)
    if verdict.refused is not None:
        raise refusal(exchange, verdict)
    exchange.reservation = reservation


def estimate_tokens(exchange: Exchange, surface: Surface) -> int:
    """The prompt's size in tokens (its text, roughly) plus what the answer may take (its cap, else the ceiling)."""
    body = exchange.forwarded_body if isinstance(exchange.forwarded_body, dict) else {}
    prompt_chars = sum(len(text) for _, text in surface.request_texts(body))
    if not prompt_chars and isinstance(exchange.forwarded_body, bytes | bytearray):
        prompt_chars = len(exchange.forwarded_body)
    output = 0
    if surface.token_limit_params:
        caps = [body.get(name) for name in surface.token_limit_params]
        given = [cap for cap in caps if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0]
        ceiling = exchange.key.policy.max_tokens_ceiling
        output = min(given) if given else (ceiling or settings.LIMITS_DEFAULT_OUTPUT_TOKENS)
    return estimated_tokens(prompt_chars) + output


def estimated_cost(exchange: Exchange, tokens: int):
    price = config_cache.prices.price_for(exchange.model_upstream)
    if price is None:
        return 0
    # All of it priced as output: the dearer rate, so an estimate errs towards the budget's safe side.
    return cost_of(Usage(prompt_tokens=0, completion_tokens=tokens), price)


def headers_for(limits, verdict: Verdict) -> dict[str, str]:
    headers = {}
    if limits.rpm_limit is not None:
        headers[HEADER_PREFIX + "limit-requests"] = str(limits.rpm_limit)
        headers[HEADER_PREFIX + "remaining-requests"] = str(max(limits.rpm_limit - verdict.requests_used, 0))
        headers[HEADER_PREFIX + "reset-requests"] = duration(verdict.requests_reset)
    if limits.tpm_limit is not None:
        headers[HEADER_PREFIX + "limit-tokens"] = str(limits.tpm_limit)
        headers[HEADER_PREFIX + "remaining-tokens"] = str(max(limits.tpm_limit - verdict.tokens_used, 0))
        headers[HEADER_PREFIX + "reset-tokens"] = duration(verdict.tokens_reset)
    return headers


def duration(seconds: int) -> str:
    """OpenAI's way of writing a reset time: "20s", "6m0s", "8h28m32s"."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def refusal(exchange: Exchange, verdict: Verdict) -> RateLimited:
    limits = exchange.key.limits
    if verdict.refused in ("daily_budget", "monthly_budget"):
        period = "day" if verdict.refused == "daily_budget" else "month"
        budget = limits.daily_budget_usd if period == "day" else limits.monthly_budget_usd
        return RateLimited(
            limit=verdict.refused,
            message=f"This API key has used its budget for the {period} (${budget}, UTC {period}); "
            f"its next request would cross it. It renews in {duration(verdict.retry_after)}.",
            type="insufficient_quota",
            code="insufficient_quota",
            retry_after=verdict.retry_after,
            headers=exchange.rate_limit_headers,
        )
    kind, name = REASONS[verdict.refused]
    limit = {"rpm": limits.rpm_limit, "tpm": limits.tpm_limit, "parallel": limits.max_parallel_requests}[
        verdict.refused
    ]
    used = {"rpm": verdict.requests_used, "tpm": verdict.tokens_used}.get(verdict.refused, limit)
    return RateLimited(
        limit=verdict.refused,
        message=f"Rate limit reached for this API key on {name}: Limit {limit}, Used {used}. "
        f"Please try again in {duration(verdict.retry_after)}.",
        type=kind,
        code="rate_limit_exceeded",
        retry_after=verdict.retry_after,
        headers=exchange.rate_limit_headers,
    )


# --- when it ends --------------------------------------------------------------------------------


def finished(exchange: Exchange) -> None:
    """Prices the exchange (for its record) and settles its reservation. Runs first among finish callbacks."""
    if exchange.key is None:
        return
    usage, status = exchange_usage(exchange)
    exchange.usage = usage
    price = config_cache.prices.price_for(priced_model(exchange)) if usage is not None else None
    if usage is None:
        exchange.cost_status = CostStatus.NO_USAGE
    elif price is None:
        exchange.cost_status = CostStatus.UNKNOWN_PRICE
        exchange.cost_usd = Decimal(0)
    else:
        exchange.cost_status = status
        exchange.cost_usd = cost_of(usage, price)
        exchange.price = price.snapshot()
    if exchange.reservation is not None:
        tokens = usage.total_tokens if usage is not None else 0
        nanos = usd_to_nanos(exchange.cost_usd) if exchange.cost_usd is not None else 0
        limiter.settle(exchange.reservation, tokens, nanos)
        exchange.reservation = None


def exchange_usage(exchange: Exchange) -> tuple[Usage | None, str]:
    """The usage the upstream reported; for a stream cut before it said, an estimate from what was sent and
    received; None when nothing went upstream or it refused."""
    reported = usage_from(exchange.response_body)
    if reported is not None:
        return reported, CostStatus.PRICED
    if exchange.upstream_status is None or exchange.upstream_status >= 400 or not exchange.stream:
        return None, CostStatus.NO_USAGE
    surface = BY_NAME.get(exchange.endpoint)
    if surface is None or not surface.streams_text:
        return None, CostStatus.NO_USAGE
    body = exchange.forwarded_body if isinstance(exchange.forwarded_body, dict) else {}
    prompt = estimated_tokens(sum(len(text) for _, text in surface.request_texts(body)))
    completion = estimated_tokens(answer_chars(surface, exchange.response_body))
    return Usage(prompt_tokens=prompt, completion_tokens=completion), CostStatus.ESTIMATED


def answer_chars(surface: Surface, body) -> int:
    """How much answer text a (reassembled) response holds, found by the adapter that knows where text lives."""
    if not isinstance(body, dict):
        return 0
    seen = [0]

    def count(text: str) -> str:
        seen[0] += len(text)
        return text

    try:
        surface.redact_response(body, count)
    except (AttributeError, TypeError, KeyError, ValueError, IndexError):
        return 0
    return seen[0]


def priced_model(exchange: Exchange) -> str | None:
    body = exchange.response_body
    reported = body.get("model") if isinstance(body, dict) else None
    if isinstance(reported, str) and reported and config_cache.prices.price_for(reported) is not None:
        return reported  # the dated snapshot that answered, when the table knows it
    return exchange.model_upstream
