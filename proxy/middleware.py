"""Request id, aiproxy's own time, and the access log line for every request."""

import logging
import re
import time

from asgiref.sync import markcoroutinefunction

from proxy.ids import new_hex_id

access_logger = logging.getLogger("aiproxy.access")

REQUEST_ID_HEADER = "X-Request-ID"
TIME_HEADER = "X-Aiproxy-Time-Ms"
_WELL_FORMED_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_for(incoming: str | None) -> str:
    """Honour a caller's id so traces join up, unless it could smuggle something into logs."""
    if incoming and _WELL_FORMED_ID.match(incoming):
        return incoming
    return new_hex_id()


def log_access(fields: dict) -> None:
    access_logger.info("request", extra={"fields": fields})


class RequestContextMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        started = time.perf_counter()
        request.request_id = request_id_for(request.headers.get(REQUEST_ID_HEADER))
        request.exchange = None
        response = await self.get_response(request)
        exchange = request.exchange
        upstream_wait = exchange.upstream_wait_seconds() if exchange else 0.0
        response[REQUEST_ID_HEADER] = request.request_id
        response[TIME_HEADER] = f"{(time.perf_counter() - started - upstream_wait) * 1000:.3f}"
        # /v1 exchanges log themselves when their last byte is sent (streams end later).
        if exchange is None:
            log_access(
                {
                    "request_id": request.request_id,
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                }
            )
        return response
