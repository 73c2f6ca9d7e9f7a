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

from limiter.http.error_shapes import anthropic_error, openai_error
from limiter.http.errors import ErrorShape, error_body
from limiter.relay.dialects.anthropic import AnthropicMessages
from limiter.relay.dialects.base import Dialect
from limiter.relay.dialects.openai import ChatCompletions
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
    # The dialect's error object: the limit refusal carries it (limiter.http.error_shapes).
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

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/chat/completions", "openai", _CHAT_COMPLETIONS, error_shape=openai_error,
          summary="OpenAI Chat Completions, forwarded to an OpenAI-kind upstream."),
    Route("POST", "/v1/messages", "anthropic", _ANTHROPIC_MESSAGES, error_shape=anthropic_error,
          summary="Anthropic Messages, forwarded to an Anthropic-kind upstream."),
    Route("POST", "/v1/messages/count_tokens", "anthropic", _ANTHROPIC_MESSAGES, billed=False,
          error_shape=anthropic_error,
          summary="Anthropic token counting (free: not checked against limits, not recorded)."),
)


def default_upstream_name(kind: str, upstreams: Mapping[str, str]) -> str | None:
    """The upstream a call of `kind` goes to when its model names none of that kind: the one
    named like the kind, else the first configured of that kind. `upstreams` maps each
    configured upstream's name to its kind."""
    if upstreams.get(kind) == kind:
        return kind
    return next((name for name, of in upstreams.items() if of == kind), None)
