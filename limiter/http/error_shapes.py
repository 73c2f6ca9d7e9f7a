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
    """`{"type": "error", "error": {"type", "message"}}`, as Anthropic's API answers."""
    kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else
                                     "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def openai_error(status: int, code: str, message: str) -> dict[str, Any]:
    """`{"error": {"message", "type", "code"}}`, as OpenAI's API answers."""
    kind = OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else
                                  "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": code}}
