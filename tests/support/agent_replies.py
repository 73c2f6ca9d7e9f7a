"""What a fake provider answers one agent call: a `Reply`, and the helpers every dialect shares.

A reply is written once in the reference units (`TokenUsage`, output including reasoning) and
turned into each provider's own fields by the shape modules (`shapes_openai`, `shapes_anthropic`,
`shapes_gemini`), so a test compares what the gateway recorded with the reference per kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ledger.tokens import TokenUsage
from tests.support.fake_upstream import pieces
from tests.support.fake_upstream import sse_event as sse

__all__ = ["ANSWER_MARK", "Reply", "ToolCall", "estimated_tokens", "pieces", "sse"]

# Every text answer of the fakes contains this, so a test can find it in an agent's output.
ANSWER_MARK = "AGENTMETER-FAKE-ANSWER"


@dataclass(frozen=True)
class ToolCall:
    """A function call the model makes instead of (or before) answering in text."""

    name: str
    arguments: dict[str, Any]
    call_id: str = "call_fake_1"

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments)


@dataclass
class Reply:
    """One scripted answer (the fakes' default answer when none is queued)."""

    text: str = f"{ANSWER_MARK}: the task is done."
    usage: TokenUsage = field(default_factory=lambda: TokenUsage(input=120, output=48,
                                                                 cache_read=64))
    # Part of the output that is reasoning (already inside `usage.output`).
    reasoning_tokens: int = 16
    tool_call: ToolCall | None = None
    # A refusal or failure: answered with `status`, `body` and `headers` instead of a model turn.
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # OpenAI Responses: the tier the answer reports and the web searches it ran.
    service_tier: str = "default"
    web_searches: int = 0

    @property
    def is_refusal(self) -> bool:
        return self.status >= 400


def estimated_tokens(raw: bytes) -> int:
    """What the fakes answer to a token-counting call: about four bytes of request per token."""
    return max(len(raw) // 4, 1)
