"""Settings of the limiter (validated by `agentmeter.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MIB = 1024 * 1024


@dataclass(frozen=True)
class ProviderSettings:
    # Base URL without the /v1 suffix.
    base_url: str
    # Never logged, never sent back: excluded from repr.
    api_key: str = field(default="", repr=False)


def _default_providers() -> dict[str, ProviderSettings]:
    return {
        "openai": ProviderSettings(base_url="https://api.openai.com"),
        "anthropic": ProviderSettings(base_url="https://api.anthropic.com"),
    }


@dataclass(frozen=True)
class LimiterSettings:
    listen: str = "127.0.0.1:8787"
    # open: a failing limit check lets the request through (counted); closed: answer 503.
    fail_mode: Literal["open", "closed"] = "open"
    # default: brief overage from in-flight requests allowed; strict: reserve an upper bound first.
    enforcement: Literal["default", "strict"] = "default"
    unknown_models: Literal["deny", "allow"] = "deny"
    max_body_bytes: int = 32 * MIB
    spool_dir: str = "./spool"
    upstream_timeout_seconds: float = 600.0
    # How long the ledger writer lets a small batch of usage records gather more before it
    # commits them (0: commit as soon as the writer is free). A one-record commit costs ~1 ms
    # of CPU, a record in a batch of 16 ~0.2 ms. Answers are journaled first, so this only
    # delays by that much when limit checks (of every process) see the spend; it loses nothing.
    record_linger_seconds: float = 0.02
    # PostgreSQL ledgers: how long a key check's answer may be reused (0 or less: never) while
    # the ledger's change notifications keep its spend current and drop it when limits, keys or
    # groups change (limiter.check_cache). Saves the ledger round trip on most requests.
    check_cache_seconds: float = 10.0
    # When set, X-Forwarded-User is honoured only with X-Agentmeter-Secret equal to it.
    trusted_header_secret: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    providers: dict[str, ProviderSettings] = field(default_factory=_default_providers)
