"""Settings of the Coder connection (the `coder` section; validated by `agentmeter.config`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CoderSettings:
    # Coder's access URL (e.g. https://coder.example.com); empty: no Coder connection.
    url: str = ""
    # A Coder token of an owner or user admin, used by `coder sync` to read users and groups.
    token: str = ""
    # A CA bundle for Coder's TLS certificate; empty: the system's trust store.
    ca_file: str = ""
    # How long Coder's answer about a token is trusted before it is asked again.
    token_cache_seconds: float = 60.0
    # While Coder is unreachable, a cached answer keeps working this long past its cache period.
    outage_grace_seconds: float = 300.0
    # How long a refusal (unknown, expired or suspended) is remembered.
    refusal_cache_seconds: float = 5.0
    # Token lookups sent to Coder at once; more wait their turn.
    max_lookups_in_flight: int = 8
    # Time budget of one request to Coder.
    request_timeout_seconds: float = 5.0
    # The exporter runs `coder sync` this often; 0: never (run `agentmeter coder sync` instead).
    sync_seconds: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.url)
