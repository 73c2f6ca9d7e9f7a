"""The providers the limiter forwards to, keyed by name and found by route path."""

from __future__ import annotations

from limiter.http.errors import NotFound
from limiter.relay.dialects.anthropic import AnthropicProvider
from limiter.relay.dialects.base import Provider
from limiter.relay.dialects.openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {p.name: p for p in (OpenAIProvider(), AnthropicProvider())}
_BY_PATH: dict[str, Provider] = {p.path: p for p in PROVIDERS.values()}


def provider_for_path(path: str) -> Provider:
    """The provider serving a proxy route; NotFound for any other path."""
    provider = _BY_PATH.get(path.rstrip("/") or "/")
    if provider is None:
        raise NotFound(f"No provider serves {path}.")
    return provider


__all__ = ["PROVIDERS", "Provider", "provider_for_path"]
