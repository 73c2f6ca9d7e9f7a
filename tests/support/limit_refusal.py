"""The limiter's over-the-limit refusal as a fake provider's scripted answer.

Shaped as the design fixes it: the seed's fields (`message`, `spent_micros`, `limit_micros`,
`limit_source`, `resets_at`), `x-should-retry: false`, and the caller's dialect's error object
whose message a person reads. It lets the agents' reaction to each status be observed before the
gateway answers it (and the gateway's own answer be compared with it after).
"""

from __future__ import annotations

from typing import Any

from tests.support import shapes_anthropic, shapes_gemini, shapes_openai
from tests.support.agent_replies import Reply

SPENT = LIMIT = 50_000_000
RESETS_AT = "2027-01-01T00:00:00Z"
MESSAGE = "Chat usage limit exceeded: $50.00 of $50.00 this month; resets 2027-01-01 00:00 UTC."

_ANTHROPIC_TYPES = {402: "billing_error", 403: "permission_error", 409: "invalid_request_error",
                    429: "rate_limit_error"}
_GEMINI_STATUSES = {402: "RESOURCE_EXHAUSTED", 403: "PERMISSION_DENIED", 409: "ABORTED",
                    429: "RESOURCE_EXHAUSTED"}


def refusal_body(dialect: str, status: int) -> dict[str, Any]:
    """The refusal's JSON for a caller speaking `dialect` (`openai`, `anthropic`, `google`)."""
    # The gateway's top-level `message` is the sentence too (Claude Code prints it).
    seed = {"message": MESSAGE, "spent_micros": SPENT,
            "limit_micros": LIMIT, "limit_source": "default", "resets_at": RESETS_AT}
    if dialect == "anthropic":
        error = shapes_anthropic.error_body(MESSAGE, _ANTHROPIC_TYPES[status])
    elif dialect == "google":
        error = shapes_gemini.error_body(status, MESSAGE, _GEMINI_STATUSES[status])
    else:
        error = shapes_openai.error_body(MESSAGE, "insufficient_quota", "usage_limit_exceeded")
    return {**seed, **error}


def limit_refusal(dialect: str, status: int = 409, retry_after: int | None = None) -> Reply:
    """The refusal as a `Reply` (with `Retry-After` in seconds when given)."""
    headers = {"x-should-retry": "false"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Reply(status=status, body=refusal_body(dialect, status), headers=headers)
