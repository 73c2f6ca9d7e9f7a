"""Every proxied route and every kind of upstream, in one table.

A *route* is one endpoint of an API dialect as clients call it: its method and path pattern, the
kind of upstream that serves it, how its model, stream flag and output cap are read (the model
may come from the path), how usage is parsed from its answers (the dialect), the shape of its
error bodies and whether calls on it are billed. An *upstream* (settings
`limiter.providers.<name>`) is where calls go; its kind says which routes it serves and how its
key is sent by default. Several routes share an upstream kind, and several upstreams may have
one kind: a call goes to the upstream its model's `provider` names, else to the kind's default.

The aiohttp routes, the OpenAPI paths, the metric label values and the tests' parametrisation
are all read from `ROUTES` and `KINDS`: adding an endpoint is adding a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from limiter.http.error_shapes import anthropic_error, gemini_error, openai_error
from limiter.http.errors import ErrorShape, error_body
from limiter.relay.dialects.anthropic import AnthropicMessages
from limiter.relay.dialects.base import Dialect
from limiter.relay.dialects.gemini import GeminiGenerate
from limiter.relay.dialects.openai import ChatCompletions
from limiter.relay.dialects.openai_responses import Responses
from limiter.settings import KeyHeader


@dataclass(frozen=True, slots=True)
class UpstreamKind:
    """What every upstream of one kind has in common."""

    name: str
    # How its key is sent unless the upstream's settings say otherwise.
    key_header: KeyHeader


@dataclass(frozen=True, slots=True)
class Route:
    """One proxied endpoint (see the module doc)."""

    method: str
    # aiohttp path pattern; `{name}` segments are path parameters.
    path: str
    # The upstream kind that serves it (a key of KINDS).
    kind: str
    dialect: Dialect
    # Calls are checked against the caller's limit and recorded in the ledger.
    billed: bool = True
    # The path parameter that names the model; None: the body's `model`.
    model_param: str | None = None
    # Fixed by the path (e.g. a streaming endpoint); None: the body's `stream` flag.
    stream: bool | None = None
    # The path parameter naming an earlier answer, which must be the caller's (else 404).
    answer_param: str | None = None
    # The dialect's error object: errors on the route take it, and the limit refusal carries
    # it beside the documented fields (limiter.http.error_shapes).
    error_shape: ErrorShape = field(default=error_body)
    summary: str = ""

    def model_of(self, body: dict[str, Any], params: Mapping[str, str]) -> str:
        """The model the call names, from the path or the body (400 when there is none)."""
        if self.model_param is not None:
            return params[self.model_param]
        return self.dialect.request_model(body)

    def is_stream(self, body: dict[str, Any]) -> bool:
        return self.stream if self.stream is not None else self.dialect.is_stream(body)


KINDS: dict[str, UpstreamKind] = {kind.name: kind for kind in (
    UpstreamKind("openai", key_header="bearer"),
    UpstreamKind("anthropic", key_header="x-api-key"),
    UpstreamKind("google", key_header="x-goog-api-key"),
)}

_CHAT_COMPLETIONS = ChatCompletions()
_ANTHROPIC_MESSAGES = AnthropicMessages()
_RESPONSES = Responses()
# A stored response: all users share the gateway's key, so only its owner reaches it.
_STORED = "/v1/responses/{response_id}"
_GEMINI = GeminiGenerate()


def _gemini_routes(version: str) -> tuple[Route, ...]:
    """The Gemini API's model calls under one API version (the model is in the path)."""
    prefix = f"/{version}/models/{{model}}"
    return (
        Route("POST", f"{prefix}:generateContent", "google", _GEMINI, model_param="model",
              stream=False, error_shape=gemini_error,
              summary=f"Gemini generateContent ({version}), forwarded to a Google-kind upstream."),
        Route("POST", f"{prefix}:streamGenerateContent", "google", _GEMINI, model_param="model",
              stream=True, error_shape=gemini_error,
              summary=f"Gemini streamGenerateContent ({version}): SSE with `?alt=sse`, else "
                      "a JSON array relayed as it arrives."),
        Route("POST", f"{prefix}:countTokens", "google", _GEMINI, billed=False,
              model_param="model", stream=False, error_shape=gemini_error,
              summary=f"Gemini token counting ({version}; free: not checked against limits, "
                      "not recorded)."),
    )


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/chat/completions", "openai", _CHAT_COMPLETIONS, error_shape=openai_error,
          summary="OpenAI Chat Completions, forwarded to an OpenAI-kind upstream."),
    Route("POST", "/v1/messages", "anthropic", _ANTHROPIC_MESSAGES, error_shape=anthropic_error,
          summary="Anthropic Messages, forwarded to an Anthropic-kind upstream."),
    Route("POST", "/v1/messages/count_tokens", "anthropic", _ANTHROPIC_MESSAGES, billed=False,
          error_shape=anthropic_error,
          summary="Anthropic token counting (free: not checked against limits, not recorded)."),
    Route("POST", "/v1/responses", "openai", _RESPONSES,
          summary="OpenAI Responses, forwarded to an OpenAI-kind upstream (not background)."),
    Route("POST", "/v1/responses/input_tokens", "openai", _RESPONSES, billed=False,
          summary="OpenAI Responses input token counting (free: not checked, not recorded)."),
    Route("GET", _STORED, "openai", _RESPONSES, billed=False, answer_param="response_id",
          summary="Retrieve one of the caller's stored responses (not billed)."),
    Route("DELETE", _STORED, "openai", _RESPONSES, billed=False, answer_param="response_id",
          summary="Delete one of the caller's stored responses (not billed)."),
    Route("POST", f"{_STORED}/cancel", "openai", _RESPONSES, billed=False,
          answer_param="response_id", summary="Cancel one of the caller's responses (not billed)."),
    Route("GET", f"{_STORED}/input_items", "openai", _RESPONSES, billed=False,
          answer_param="response_id",
          summary="List the input items of one of the caller's responses (not billed)."),
    *_gemini_routes("v1beta"),
    *_gemini_routes("v1"),
)


def default_upstream_name(kind: str, upstreams: Mapping[str, str]) -> str | None:
    """The upstream a call of `kind` goes to when its model names none of that kind: the one
    named like the kind, else the first configured of that kind. `upstreams` maps each
    configured upstream's name to its kind."""
    if upstreams.get(kind) == kind:
        return kind
    return next((name for name, of in upstreams.items() if of == kind), None)
