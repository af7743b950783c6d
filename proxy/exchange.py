"""One /v1 request/response pair as it happens: what the access log and the audit record are made of."""

import time
from dataclasses import dataclass, field
from decimal import Decimal

from policies.cache import KeyContext
from policies.pricing import Usage
from proxy.errors import ProxyError
from proxy.ids import new_uuid
from proxy.limiter import Reservation
from proxy.models import AuditRecord

# One vocabulary for the exchange, the access log and the audit record's column.
Outcome = AuditRecord.Outcome


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


@dataclass(slots=True, eq=False)
class Exchange:
    request_id: str
    method: str
    path: str
    endpoint: str
    client_ip: str | None
    user_agent: str
    # Written by the begin journal and by the finished record alike: the one a replay must not duplicate.
    record_id: str = field(default_factory=lambda: str(new_uuid()))
    started: float = field(default_factory=time.perf_counter)
    received_at: float = field(default_factory=time.time)
    key: KeyContext | None = None
    stream: bool = False
    request_body: dict | bytes | None = None
    request_content_type: str = ""
    forwarded_body: dict | bytes | None = None
    modifications: list[str] = field(default_factory=list)
    model_requested: str | None = None
    model_upstream: str | None = None
    status: int | None = None
    upstream_status: int | None = None
    response_body: dict | bytes | None = None
    response_content_type: str = ""
    response_truncated: bool = False  # the response was too large to keep whole for the record
    # The id of the object the upstream stored for this request (a Responses API response): the key owns it.
    stored_id: str | None = None
    error: ProxyError | None = None
    outcome: Outcome | None = None
    # Limits and spend (proxy.accounting): the reservation to settle, the key's headers, the priced usage.
    reservation: Reservation | None = None
    rate_limit_headers: dict[str, str] = field(default_factory=dict)
    hide_stream_usage: bool = False  # usage was asked of the upstream for accounting, not by the client
    usage: Usage | None = None
    cost_usd: Decimal | None = None
    cost_status: str = ""
    price: dict | None = None
    upstream_started: float | None = None
    upstream_headers: float | None = None
    first_byte: float | None = None
    finished: float | None = None
    _on_finish: list = field(default_factory=list)

    def mark_upstream_start(self) -> None:
        self.upstream_started = time.perf_counter()

    def mark_upstream_headers(self, status: int) -> None:
        self.upstream_headers = time.perf_counter()
        self.upstream_status = status

    def mark_first_byte(self) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()

    def upstream_wait_seconds(self) -> float:
        """Time spent waiting for the upstream's headers: excluded from aiproxy's own time."""
        if self.upstream_started is None or self.upstream_headers is None:
            return 0.0
        return self.upstream_headers - self.upstream_started

    def fail(self, error: ProxyError, outcome: Outcome) -> None:
        self.error = error
        self.status = error.status
        self.outcome = outcome

    def on_finish(self, callback) -> None:
        self._on_finish.append(callback)

    def finish(self, *, outcome: Outcome | None = None) -> None:
        """Called once, when the last byte went to the client (or the client went away)."""
        if self.finished is not None:
            return
        self.finished = time.perf_counter()
        if outcome is not None:
            self.outcome = outcome
        if self.outcome is None:
            self.outcome = Outcome.OK if (self.status or 0) < 400 else Outcome.UPSTREAM_ERROR
        for callback in self._on_finish:
            callback(self)

    def timings(self) -> dict[str, float | None]:
        end = self.finished or time.perf_counter()
        upstream_total = None if self.upstream_started is None else end - self.upstream_started
        return {
            "duration_ms": _ms(end - self.started),
            "upstream_ms": _ms(upstream_total),
            "ttfb_ms": _ms(None if self.first_byte is None else self.first_byte - self.started),
        }

    def log_fields(self) -> dict:
        return {
            "request_id": self.request_id,
            "key_prefix": self.key.key_prefix if self.key else None,
            "method": self.method,
            "path": self.path,
            "endpoint": self.endpoint,
            "status": self.status,
            "upstream_status": self.upstream_status,
            "stream": self.stream,
            "outcome": str(self.outcome) if self.outcome else None,
            "policy": self.key.policy.name if self.key else None,
            **self.timings(),
        }
