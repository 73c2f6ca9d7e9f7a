"""Gemini API answers in the API's real shapes: `GenerateContentResponse` chunks whose
`usageMetadata` carries the running total, written as SSE (`?alt=sse`) or as a JSON array."""

from __future__ import annotations

import json
from typing import Any

from tests.support.agent_replies import Reply, pieces

# Of the reference input, this share is reported as the prompt of tool results.
TOOL_USE_PROMPT_TOKENS = 7


def usage_metadata(reply: Reply, *, output_so_far: int | None = None) -> dict[str, Any]:
    """The reference usage in Gemini's fields; `output_so_far` for a chunk before the last."""
    usage = reply.usage
    if usage.cache_write or usage.cache_write_1h:
        raise ValueError("the Gemini API reports no cache writes")
    tool_prompt = min(TOOL_USE_PROMPT_TOKENS, usage.input)
    thoughts = reply.reasoning_tokens
    output = usage.output if output_so_far is None else output_so_far
    candidates = max(output - thoughts, 0)
    prompt = usage.input - tool_prompt + usage.cache_read
    metadata: dict[str, Any] = {
        "promptTokenCount": prompt, "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + tool_prompt + candidates + thoughts,
        "cachedContentTokenCount": usage.cache_read, "toolUsePromptTokenCount": tool_prompt,
        "thoughtsTokenCount": min(thoughts, output),
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if usage.cache_read:
        metadata["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage.cache_read}]
    return metadata


def _chunk(parts: list[dict[str, Any]], model: str, usage: dict[str, Any],
           finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
            "responseId": "fake-gemini-response"}


def _final_part(reply: Reply) -> dict[str, Any]:
    if reply.tool_call is None:
        return {"text": reply.text}
    return {"functionCall": {"name": reply.tool_call.name, "args": reply.tool_call.arguments}}


def generate_body(reply: Reply, model: str) -> dict[str, Any]:
    return _chunk([_final_part(reply)], model, usage_metadata(reply), "STOP")


def stream_chunks(reply: Reply, model: str) -> list[dict[str, Any]]:
    """Text pieces, each chunk reporting the usage so far; the last one the final total."""
    texts = pieces(reply.text) if reply.tool_call is None else []
    chunks = []
    for index, text in enumerate(texts[:-1]):
        so_far = min(reply.reasoning_tokens + index + 1, reply.usage.output)
        chunks.append(_chunk([{"text": text}], model, usage_metadata(reply, output_so_far=so_far)))
    last = [{"text": texts[-1]}] if texts else [_final_part(reply)]
    chunks.append(_chunk(last, model, usage_metadata(reply), "STOP"))
    return chunks


def sse_stream(chunks: list[dict[str, Any]]) -> list[str]:
    """`?alt=sse`: one `data:` event per chunk, lines ended with CRLF as the API writes them."""
    return [f"data: {json.dumps(chunk)}\r\n\r\n" for chunk in chunks]


def array_stream(chunks: list[dict[str, Any]]) -> list[str]:
    """Without `alt=sse`: one pretty-printed JSON array, written element by element."""
    out = []
    for index, chunk in enumerate(chunks):
        out.append(("[" if index == 0 else ",\r\n") + json.dumps(chunk, indent=2))
    out.append("]" if chunks else "[]")
    return out


def count_tokens_body(total: int) -> dict[str, Any]:
    return {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT",
                                                           "tokenCount": total}]}


def models_list(models: list[str]) -> dict[str, Any]:
    return {"models": [{"name": f"models/{name}", "version": "001", "displayName": name,
                        "description": "A fake Gemini model.", "inputTokenLimit": 1_048_576,
                        "outputTokenLimit": 65_536,
                        "supportedGenerationMethods": ["generateContent", "countTokens"],
                        "temperature": 1.0, "topP": 0.95, "topK": 64, "thinking": True}
                       for name in models]}


def error_body(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}
