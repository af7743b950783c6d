"""Every error aiproxy itself answers, in OpenAI's shape: {"error": {message, type, param, code}}."""

import orjson
from django.http import HttpResponse


class ProxyError(Exception):
    def __init__(
        self,
        *,
        status: int,
        message: str,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> HttpResponse:
        return json_response(self.body(), status=self.status)


def json_response(body: dict, *, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(body), status=status, content_type="application/json")


def invalid_request(message: str, *, code: str, param: str | None = None, status: int = 400) -> ProxyError:
    return ProxyError(status=status, message=message, type="invalid_request_error", code=code, param=param)


def missing_key() -> ProxyError:
    return ProxyError(
        status=401,
        message="You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
        code="missing_api_key",
        type="invalid_request_error",
    )


def invalid_key() -> ProxyError:
    return ProxyError(
        status=401,
        message="Incorrect API key provided, or the key is revoked or expired.",
        code="invalid_api_key",
        type="invalid_request_error",
    )


def upstream_unreachable() -> ProxyError:
    return ProxyError(
        status=502,
        message="The upstream model server could not be reached.",
        type="upstream_error",
        code="upstream_unreachable",
    )


def upstream_timeout() -> ProxyError:
    return ProxyError(
        status=504,
        message="The upstream model server did not answer in time.",
        type="upstream_error",
        code="upstream_timeout",
    )


def upstream_cut() -> ProxyError:
    return ProxyError(
        status=502,
        message="The upstream model server ended the stream before it was complete.",
        type="upstream_error",
        code="upstream_stream_interrupted",
    )


def upstream_bad_response(detail: str) -> ProxyError:
    return ProxyError(
        status=502,
        message=f"The upstream model server sent an answer aiproxy cannot relay: {detail}.",
        type="upstream_error",
        code="upstream_bad_response",
    )


def service_unavailable(what: str = "API keys") -> ProxyError:
    return ProxyError(
        status=503,
        message=f"aiproxy cannot check {what} right now; retry shortly.",
        type="server_error",
        code="service_unavailable",
    )


def internal_error() -> ProxyError:
    return ProxyError(
        status=500,
        message="aiproxy failed to handle this request; it has been logged.",
        type="server_error",
        code="internal_error",
    )


def not_found(path: str) -> ProxyError:
    return invalid_request(f"Unknown path: {path}", code="not_found", status=404)


def endpoint_not_allowed(surface: str) -> ProxyError:
    return PolicyRejected(
        status=403,
        message=f"This API key may not use the {surface} API.",
        code="endpoint_not_allowed",
        type="invalid_request_error",
    )


def method_not_allowed(method: str, allowed: tuple[str, ...]) -> ProxyError:
    return invalid_request(
        f"Method {method} is not allowed here; use {', '.join(allowed)}.", code="method_not_allowed", status=405
    )


def request_too_large(limit: int) -> ProxyError:
    return invalid_request(
        f"The request body is larger than the {limit} bytes this server accepts.", code="request_too_large", status=413
    )


class PolicyRejected(ProxyError):
    """A request the key's policy does not allow (forbidden model, blocked content)."""
