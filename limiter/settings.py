"""Settings of the limiter (validated by `agentmeter.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MIB = 1024 * 1024

# How an upstream expects its key: `bearer` (`Authorization: Bearer <key>`), or the name of the
# header that carries the key alone (`x-api-key`, `x-goog-api-key`, Azure's `api-key`, ...).
KeyHeader = str


@dataclass(frozen=True)
class UpstreamSettings:
    """Where calls go: one provider endpoint, its key and its connection limits.

    The settings key (`limiter.providers.<name>`) is the upstream's name: the `provider` label
    on /metrics and the ledger's provider of every message it answers.
    """

    # Base URL without the /v1 suffix.
    base_url: str
    # Never logged, never sent back: excluded from repr.
    api_key: str = field(default="", repr=False)
    # The API dialect it serves (`openai`, `anthropic`, `google`); empty: the upstream's name.
    kind: str = ""
    # How the key is sent (see KeyHeader); empty: the usual way of its kind.
    key_header: KeyHeader | None = None
    # Fixed headers sent on every call (e.g. OpenAI-Organization, OpenAI-Project).
    headers: dict[str, str] = field(default_factory=dict)
    # Empty: limiter.upstream_timeout_seconds. Read: the longest wait for the next bytes.
    connect_timeout_seconds: float | None = None
    read_timeout_seconds: float | None = None
    # Connections open to it at once; calls past it wait (counted in the connection-wait
    # histogram). A stream holds one for its whole length.
    max_connections: int = 8192
    # A PEM bundle of CAs trusted for this upstream instead of the system's (private gateways).
    ca_file: str | None = None


def _default_providers() -> dict[str, UpstreamSettings]:
    return {
        "openai": UpstreamSettings(base_url="https://api.openai.com"),
        "anthropic": UpstreamSettings(base_url="https://api.anthropic.com"),
        "google": UpstreamSettings(base_url="https://generativelanguage.googleapis.com"),
    }


# Statuses an over-the-limit refusal may have: 409 Conflict (the default), 402 Payment
# Required, 403 Forbidden, 429 Too Many Requests. Agents differ in which they stop on.
LIMIT_EXCEEDED_STATUSES = frozenset({409, 402, 403, 429})


@dataclass(frozen=True)
class LimiterSettings:
    listen: str = "127.0.0.1:8787"
    # open: a failing limit check lets the request through (counted); closed: answer 503.
    fail_mode: Literal["open", "closed"] = "open"
    # default: brief overage from in-flight requests allowed; strict: reserve an upper bound first.
    enforcement: Literal["default", "strict"] = "default"
    unknown_models: Literal["deny", "allow"] = "deny"
    # The status of the over-the-limit refusal: 409, or 402/403/429 for fleets whose agents
    # retry a 409 (the README's agent table says which client stops on which status).
    limit_exceeded_status: int = 409
    # Send Retry-After (seconds until the period resets) with the refusal. Off by default:
    # agents that honour it sleep until the reset, hours, showing nothing.
    limit_retry_after: bool = False
    max_body_bytes: int = 32 * MIB
    # Request-body bytes held in memory at once, over all requests; past it new requests wait
    # briefly, then get 503 with a short Retry-After.
    max_buffered_body_bytes: int = 256 * MIB
    # A client must send a whole request head within this long of connecting (or of its
    # previous answer), and a whole body within the second; else it is cut off (408 if it can
    # still be answered).
    client_header_timeout_seconds: float = 10.0
    client_body_timeout_seconds: float = 60.0
    # Connections the kernel queues for the limiter before it accepts them (listen(2)'s
    # backlog; the kernel caps it at net.core.somaxconn). Past it, new connections' SYNs are
    # dropped and clients retry after 1, 3, 7, 15... seconds: agents opening thousands of
    # streams at once need room.
    listen_backlog: int = 4096
    spool_dir: str = "./spool"
    upstream_timeout_seconds: float = 600.0
    # How long the ledger writer lets a small batch of usage records gather more before it
    # commits them (0: commit as soon as the writer is free). A one-record commit costs ~1 ms
    # of CPU, a record in a batch of 16 ~0.2 ms. Answers are journaled first, so this only
    # delays by that much when limit checks (of every process) see the spend; it loses nothing.
    record_linger_seconds: float = 0.02
    # PostgreSQL ledgers: how long a key check's answer may be reused (0 or less: never) while
    # the ledger's change notifications keep its spend current and drop it when limits, keys or
    # groups change (limiter.admission.check_cache). Saves the ledger round trip on most requests.
    check_cache_seconds: float = 10.0
    # When set, X-Forwarded-User is honoured only with X-Agentmeter-Secret equal to it.
    trusted_header_secret: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    # The upstreams, by name (see UpstreamSettings).
    providers: dict[str, UpstreamSettings] = field(default_factory=_default_providers)

    def __post_init__(self) -> None:
        if self.limit_exceeded_status not in LIMIT_EXCEEDED_STATUSES:
            allowed = ", ".join(map(str, sorted(LIMIT_EXCEEDED_STATUSES)))
            raise ValueError(f"limiter.limit_exceeded_status must be one of {allowed}, "
                             f"got {self.limit_exceeded_status}")
