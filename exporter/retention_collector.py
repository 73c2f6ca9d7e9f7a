"""How far back the ledger's raw messages go, and what the last prune did.

Reads the one `message_retention` row per scrape (written by the maintenance run of whichever
replica holds the lock, so every replica reports the same) and the configured retention.
A gauge whose value is not known yet (no message, never pruned) is absent rather than 0, which
would read as 1970.

Sample::

    agentmeter_ledger_message_retention_seconds 3.456e+07
    agentmeter_ledger_messages_oldest_timestamp_seconds 1.7302464e+09
    agentmeter_ledger_prune_last_success_timestamp_seconds 1.7650332e+09
    agentmeter_ledger_prune_last_removed_messages 9254321.0
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine

from ledger import metric_names as names
from ledger.retention import retention_state
from ledger.settings import LedgerSettings

SECONDS_PER_DAY = 86_400


def _gauge(name: str, documentation: str, value: float | datetime | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    if isinstance(value, datetime):
        family.add_metric([], value.timestamp())
    elif value is not None:
        family.add_metric([], float(value))
    return family


class RetentionCollector:
    def __init__(self, engine: Engine, settings: LedgerSettings) -> None:
        self._engine = engine
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        with self._engine.connect() as conn:
            state = retention_state(conn)
        yield _gauge(names.LEDGER_MESSAGE_RETENTION_SECONDS,
                     "How long the ledger keeps raw messages (0: all of them).",
                     self._settings.message_retention_days * SECONDS_PER_DAY)
        yield _gauge(names.LEDGER_MESSAGES_OLDEST_TIMESTAMP_SECONDS,
                     "created_at of the oldest message in the ledger at the last maintenance "
                     "run (Unix time).", state.oldest_message_at)
        yield _gauge(names.LEDGER_PRUNE_LAST_SUCCESS_TIMESTAMP_SECONDS,
                     "When messages were last pruned successfully (Unix time).", state.pruned_at)
        yield _gauge(names.LEDGER_PRUNE_LAST_REMOVED_MESSAGES,
                     "Messages the last successful prune removed.",
                     state.pruned_messages if state.pruned_at is not None else None)
