"""OpenAI answers in the API's real shapes: Chat Completions (with tool calls) and Responses."""

from __future__ import annotations

import time
from typing import Any

from tests.support.agent_replies import Reply, pieces, sse
from tests.support.fake_upstream import openai_usage_json

# Chat Completions ------------------------------------------------------------------------------


def chat_body(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    finish = "stop"
    if reply.tool_call is not None:
        call = reply.tool_call
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
            {"id": call.call_id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments_json}}]}
        finish = "tool_calls"
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": model, "service_tier": reply.service_tier,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish}],
            "usage": openai_usage_json(reply.usage, reply.reasoning_tokens)}


def chat_events(reply: Reply, model: str, include_usage: bool) -> list[str]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "service_tier": reply.service_tier}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}], **extra})

    events = [chunk({"role": "assistant", "content": ""})]
    if reply.tool_call is not None:
        call = reply.tool_call
        events.append(chunk({"tool_calls": [{"index": 0, "id": call.call_id, "type": "function",
                                             "function": {"name": call.name,
                                                          "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                   for piece in pieces(call.arguments_json)]
        events.append(chunk({}, "tool_calls"))
    else:
        events += [chunk({"content": piece}) for piece in pieces(reply.text)]
        events.append(chunk({}, "stop"))
    if include_usage:
        events.append(sse({**base, "choices": [],
                           "usage": openai_usage_json(reply.usage, reply.reasoning_tokens)}))
    events.append(sse("[DONE]"))
    return events


# Responses -------------------------------------------------------------------------------------


def responses_usage_json(reply: Reply) -> dict[str, Any]:
    usage = reply.usage
    if usage.cache_write or usage.cache_write_1h:
        raise ValueError("the Responses API reports no cache writes")
    given = usage.input + usage.cache_read
    return {"input_tokens": given, "input_tokens_details": {"cached_tokens": usage.cache_read},
            "output_tokens": usage.output,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": given + usage.output}


def response_items(reply: Reply, response_id: str) -> list[dict[str, Any]]:
    """The output items of a finished answer: reasoning, web searches, then text or a call."""
    items: list[dict[str, Any]] = []
    if reply.reasoning_tokens:
        items.append({"id": f"rs_{response_id}", "type": "reasoning", "summary": []})
    items += [{"id": f"ws_{response_id}_{n}", "type": "web_search_call", "status": "completed",
               "action": {"type": "search", "query": "agentmeter"}}
              for n in range(reply.web_searches)]
    if reply.tool_call is not None:
        call = reply.tool_call
        items.append({"id": f"fc_{response_id}", "type": "function_call", "status": "completed",
                      "call_id": call.call_id, "name": call.name,
                      "arguments": call.arguments_json})
    else:
        items.append({"id": f"msg_{response_id}", "type": "message", "status": "completed",
                      "role": "assistant",
                      "content": [{"type": "output_text", "text": reply.text,
                                   "annotations": [], "logprobs": []}]})
    return items


def response_object(reply: Reply, model: str, response_id: str, *, status: str,
                    request: dict[str, Any]) -> dict[str, Any]:
    """A Response as `POST /v1/responses` and its stream's events carry it."""
    done = status != "in_progress"
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()),
        "status": status, "background": False, "error": None, "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"), "model": model,
        "output": response_items(reply, response_id) if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None}, "service_tier": reply.service_tier,
        "store": request.get("store", True), "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
        "tools": request.get("tools", []), "top_p": 1.0, "truncation": "disabled",
        "usage": responses_usage_json(reply) if done else None, "user": None, "metadata": {},
    }


def responses_events(reply: Reply, model: str, response_id: str,
                     request: dict[str, Any]) -> list[str]:
    """The SSE events of a streamed answer, numbered as the API numbers them."""
    numbered: list[tuple[str, dict[str, Any]]] = []

    def add(kind: str, **fields: Any) -> None:
        numbered.append((kind, {"type": kind, **fields}))

    running = response_object(reply, model, response_id, status="in_progress", request=request)
    add("response.created", response=running)
    add("response.in_progress", response=running)
    for index, item in enumerate(response_items(reply, response_id)):
        _item_events(add, index, item)
    add("response.completed",
        response=response_object(reply, model, response_id, status="completed",
                                 request=request))
    return [sse({**data, "sequence_number": n}, kind) for n, (kind, data) in enumerate(numbered)]


def _item_events(add: Any, index: int, item: dict[str, Any]) -> None:
    kind, item_id = item["type"], item["id"]
    if kind == "message":
        text = item["content"][0]["text"]
        add("response.output_item.added", output_index=index,
            item={**item, "status": "in_progress", "content": []})
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        add("response.content_part.added", item_id=item_id, output_index=index,
            content_index=0, part=part)
        for piece in pieces(text):
            add("response.output_text.delta", item_id=item_id, output_index=index,
                content_index=0, delta=piece, logprobs=[])
        add("response.output_text.done", item_id=item_id, output_index=index, content_index=0,
            text=text, logprobs=[])
        add("response.content_part.done", item_id=item_id, output_index=index,
            content_index=0, part={**part, "text": text})
    elif kind == "function_call":
        add("response.output_item.added", output_index=index,
            item={**item, "status": "in_progress", "arguments": ""})
        for piece in pieces(item["arguments"]):
            add("response.function_call_arguments.delta", item_id=item_id, output_index=index,
                delta=piece)
        add("response.function_call_arguments.done", item_id=item_id, output_index=index,
            arguments=item["arguments"])
    else:
        add("response.output_item.added", output_index=index, item=item)
    add("response.output_item.done", output_index=index, item=item)


def models_list(models: list[str]) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 1_700_000_000,
                                        "owned_by": "openai"} for name in models]}


def error_body(message: str, kind: str = "invalid_request_error",
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
