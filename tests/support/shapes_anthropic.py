"""Anthropic Messages answers in the API's real shapes, tool use and cache tokens included."""

from __future__ import annotations

from typing import Any

from tests.support.agent_replies import Reply, pieces, sse
from tests.support.fake_upstream import anthropic_usage_json


def _content(reply: Reply) -> list[dict[str, Any]]:
    if reply.tool_call is None:
        return [{"type": "text", "text": reply.text}]
    call = reply.tool_call
    return [{"type": "tool_use", "id": f"toolu_{call.call_id}", "name": call.name,
             "input": call.arguments}]


def _stop_reason(reply: Reply) -> str:
    return "end_turn" if reply.tool_call is None else "tool_use"


def messages_body(reply: Reply, model: str) -> dict[str, Any]:
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": _content(reply), "stop_reason": _stop_reason(reply),
            "stop_sequence": None, "usage": anthropic_usage_json(reply.usage)}


def messages_events(reply: Reply, model: str) -> list[str]:
    """A streamed answer: `message_start` has the input side, `message_delta` the final output
    (and repeats the input side, as the API does: a parser that summed would double-bill)."""
    start_usage = anthropic_usage_json(reply.usage, output=1)
    delta_usage = anthropic_usage_json(reply.usage)
    del delta_usage["cache_creation"], delta_usage["service_tier"]
    message: dict[str, Any] = {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    events = [sse({"type": "message_start", "message": message}, "message_start"),
              sse({"type": "ping"}, "ping")]
    block = _content(reply)[0]
    opening: dict[str, Any]
    if reply.tool_call is None:
        opening, kind, key = {"type": "text", "text": ""}, "text_delta", "text"
        chunks = pieces(reply.text)
    else:
        opening, kind, key = {**block, "input": {}}, "input_json_delta", "partial_json"
        chunks = pieces(reply.tool_call.arguments_json)
    events.append(sse({"type": "content_block_start", "index": 0, "content_block": opening},
                      "content_block_start"))
    events += [sse({"type": "content_block_delta", "index": 0,
                    "delta": {"type": kind, key: piece}}, "content_block_delta")
               for piece in chunks]
    events += [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse({"type": "message_delta",
             "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
             "usage": delta_usage}, "message_delta"),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return events


def models_list(models: list[str]) -> dict[str, Any]:
    data = [{"type": "model", "id": name, "display_name": name,
             "created_at": "2025-09-29T00:00:00Z"} for name in models]
    return {"data": data, "has_more": False, "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None}


def error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}
