"""Settings of the ledger's database connection (validated by `agentmeter.config`)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///./agentmeter.db"


@dataclass(frozen=True)
class DatabaseSettings:
    # Written the way operators write it: sqlite:///path or postgresql://user:pass@host:5432/db.
    url: str = DEFAULT_DATABASE_URL
    # Connections per process; every process of the limiter and the exporter keeps its own.
    pool_size: int = 16
    # How long a query may wait for the database before the caller treats it as unreachable.
    connect_timeout_seconds: float = 2.0
