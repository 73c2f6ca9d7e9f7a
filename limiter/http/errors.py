"""Errors the limiter answers with: each carries its HTTP status and a stable machine code.

Handlers and adapters raise these; one middleware (`limiter.http.middleware`) turns them into
`{"error": {"code": ..., "message": ...}}` answers, so no handler builds error bodies by hand and
nothing else (a traceback, an upstream secret) can leak into a client's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

# Status recorded when the client left before its answer was complete (nginx's convention).
CLIENT_CLOSED_REQUEST = 499


# (status, code, message) -> the JSON body of an error answer in one API dialect.
ErrorShape = Callable[[int, str, str], dict[str, Any]]


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The limiter's JSON error object (`status` is for shapes that repeat it in the body)."""
    return {"error": {"code": code, "message": message}}


class LimiterError(Exception):
    """A request the limiter refuses or cannot complete; `message` is shown to the client."""

    status: int = 500
    default_code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Internal error."

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.message = message if message is not None else self.default_message
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """The JSON answer; `LimitExceeded` replaces it with the documented 409 body."""
        return error_body(self.status, self.code, self.message)


class BadRequest(LimiterError):
    status = 400
    default_code = "bad_request"
    default_message = "The request is not valid."


class Unauthorized(LimiterError):
    status = 401
    default_code = "unauthorized"
    default_message = "Missing, unknown or revoked API key."


class Forbidden(LimiterError):
    status = 403
    default_code = "forbidden"
    default_message = "This route needs the admin token."


class NotFound(LimiterError):
    status = 404
    default_code = "not_found"
    default_message = "Not found."


class RequestTimeout(LimiterError):
    status = 408
    default_code = "request_timeout"
    default_message = "The request did not arrive in time."


class ClientClosedRequest(LimiterError):
    """The client went away before its request was whole: nobody is left to answer."""

    status = CLIENT_CLOSED_REQUEST
    default_code = "client_closed_request"
    default_message = "The client closed the connection before its request was complete."


class LimitExceeded(LimiterError):
    """Spend has reached the effective limit: the documented status object, merged with the
    caller's dialect's error object (the route's `error_shape`, see `limiter.http.middleware`)
    so that every agent shows the message.

    `x-should-retry: false` stops the official SDKs from retrying on their own; `Retry-After`
    (the seconds until the reset) is sent only when asked for, since agents that honour it
    sleep silently for hours. The status is `limiter.limit_exceeded_status` (409 by default).
    """

    status = 409
    default_code = "limit_exceeded"
    default_message = "Chat usage limit exceeded."

    def __init__(self, status_body: Mapping[str, Any], *, status: int = 409,
                 retry_after_seconds: int | None = None) -> None:
        headers = {"x-should-retry": "false"}
        if retry_after_seconds is not None:
            headers["Retry-After"] = str(max(0, retry_after_seconds))
        super().__init__(str(status_body.get("message", self.default_message)),
                         headers=headers)
        self.status = status
        self.status_body: dict[str, Any] = dict(status_body)

    def body(self, shape: ErrorShape = error_body) -> dict[str, Any]:
        """The documented fields, merged with `shape`'s error object (the route's dialect's)."""
        return {**self.status_body, **shape(self.status, self.code, self.message)}


class PayloadTooLarge(LimiterError):
    status = 413
    default_code = "payload_too_large"
    default_message = "The request body is larger than the limiter accepts."


class UnsupportedMediaType(LimiterError):
    status = 415
    default_code = "unsupported_media_type"
    default_message = "The request body's encoding is not accepted."


class UpstreamError(LimiterError):
    status = 502
    default_code = "upstream_error"
    default_message = "The provider could not be reached."


class ServiceUnavailable(LimiterError):
    status = 503
    default_code = "service_unavailable"
    default_message = "The limiter cannot check spend limits right now."


class UpstreamTimeout(LimiterError):
    status = 504
    default_code = "upstream_timeout"
    default_message = "The provider did not answer in time."


__all__ = [
    "BadRequest",
    "ClientClosedRequest",
    "Forbidden",
    "LimitExceeded",
    "LimiterError",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamTimeout",
]
