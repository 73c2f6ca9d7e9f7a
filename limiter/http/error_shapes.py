"""The error object of each API dialect, for answers its clients must understand.

An agent shows the message it finds where its provider puts one; these build that object from
the limiter's status, machine code and message (`limiter.http.errors.ErrorShape`). The
limiter's own shape, `{"error": {"code", "message"}}`, is `limiter.http.errors.error_body`.
"""

from __future__ import annotations

from typing import Any

# Anthropic's `error.type` by status (its API's documented error types); 409 has none of its
# own there, and a refused request is one Anthropic's clients should not send again as it is.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 409: "invalid_request_error",
    413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error",
}
# OpenAI's `error.type` by status; a spend limit is what OpenAI calls `insufficient_quota`.
OPENAI_ERROR_TYPES = {
    401: "authentication_error", 402: "insufficient_quota", 403: "permission_error",
    409: "insufficient_quota", 429: "insufficient_quota",
}


def anthropic_error(status: int, code: str, message: str) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}}`, as Anthropic's API answers, with the
    limiter's machine `code` beside them (clients read `type` and `message`; operators and
    scripts keep the code every other route gives)."""
    kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else
                                     "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message, "code": code}}


def openai_error(status: int, code: str, message: str) -> dict[str, Any]:
    """`{"error": {"message", "type", "code"}}`, as OpenAI's API answers."""
    kind = OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else
                                  "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": code}}


# The gRPC status name Google's APIs put beside each HTTP status in an error body.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 402: "FAILED_PRECONDITION",
    403: "PERMISSION_DENIED", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 409: "ABORTED",
    413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def gemini_error(status: int, code: str, message: str) -> dict[str, Any]:
    """An error body in the Gemini API's shape, `{"error": {"code", "message", "status"}}`:
    `code` is the HTTP status there, and the limiter's own code goes in an `ErrorInfo`
    detail's `reason`, where Google's APIs put theirs."""
    return {"error": {"code": status, "message": message,
                      "status": _STATUS_NAMES.get(status, "UNKNOWN"),
                      "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                   "reason": code, "domain": "agentmeter"}]}}
