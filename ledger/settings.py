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


@dataclass(frozen=True)
class LedgerSettings:
    # Raw messages older than this many days are removed (`agentmeter db prune` and the
    # exporter's maintenance task); the rollups keep every report and limit whole. 0: keep all.
    message_retention_days: int = 0
    # How often the exporter's maintenance task prunes and creates the next months' partitions.
    maintenance_interval_seconds: float = 3600.0
    # SQLite deletes in batches of this many rows, one short transaction each, so recording
    # never waits long for the database lock.
    prune_batch_rows: int = 5000

    def __post_init__(self) -> None:
        if self.message_retention_days < 0:
            raise ValueError("ledger.message_retention_days must be 0 (keep all) or positive: "
                             f"{self.message_retention_days}")
        if self.maintenance_interval_seconds <= 0:
            raise ValueError("ledger.maintenance_interval_seconds must be positive: "
                             f"{self.maintenance_interval_seconds}")
        if self.prune_batch_rows <= 0:
            raise ValueError(f"ledger.prune_batch_rows must be positive: {self.prune_batch_rows}")
