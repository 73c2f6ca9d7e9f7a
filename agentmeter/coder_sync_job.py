"""`coder sync` on a timer in the exporter process (`coder.sync_seconds`), seen on /metrics.

The composition root wires it so that `exporter/` need not know about Coder. Replicas take
turns through the sync's PostgreSQL advisory lock: a round another replica is running is
skipped, not failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from coder.settings import CoderSettings
from coder.sync import sync_once
from ledger import metric_names as m
from ledger.engine import create_sync_engine
from ledger.settings import DatabaseSettings

LOGGER = logging.getLogger("agentmeter.coder.sync")
# How the sync's ledger connections show in pg_stat_activity.
APPLICATION_NAME = "agentmeter-coder-sync"


class CoderSyncJob(Collector):
    """Runs the sync every `sync_seconds` and publishes how the last round went::

        agentmeter_coder_sync_success 1
        agentmeter_coder_sync_last_success_timestamp_seconds 1.7654e+09
        agentmeter_coder_sync_duration_seconds 0.42
        agentmeter_coder_sync_changes_total 17
    """

    def __init__(self, settings: CoderSettings, engine: Engine) -> None:
        self._settings = settings
        self._engine = engine
        self.success: bool | None = None  # None until the first round ended
        self.last_success = 0.0
        self.duration = 0.0
        self.changes = 0

    async def run_once(self) -> None:
        started = time.monotonic()
        try:
            changes = await sync_once(self._settings, self._engine)
        except Exception as exc:
            self.success = False
            LOGGER.error("coder sync failed: %s", exc)
        else:
            self.success = True
            self.last_success = time.time()
            if changes is None:
                LOGGER.info("coder sync skipped: another replica is syncing")
            else:
                self.changes += len(changes)
                for change in changes:
                    LOGGER.info("coder sync: %s", change)
        finally:
            self.duration = time.monotonic() - started

    async def run(self) -> None:
        """Sync now, then every `sync_seconds`, until cancelled."""
        while True:
            await self.run_once()
            await asyncio.sleep(self._settings.sync_seconds)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        if self.success is not None:
            yield GaugeMetricFamily(m.CODER_SYNC_SUCCESS, "1 when the last Coder sync worked",
                                    value=int(self.success))
            yield GaugeMetricFamily(m.CODER_SYNC_DURATION_SECONDS,
                                    "Seconds the last Coder sync took", value=self.duration)
        yield GaugeMetricFamily(m.CODER_SYNC_LAST_SUCCESS_TIMESTAMP_SECONDS,
                                "Unix time of the last Coder sync that worked (0: none yet)",
                                value=self.last_success)
        yield CounterMetricFamily(m.CODER_SYNC_CHANGES,
                                  "Changes Coder syncs made to the ledger's users and groups",
                                  value=self.changes)


def coder_sync_jobs(settings: CoderSettings, database: DatabaseSettings,
                    registry: CollectorRegistry) -> list[Coroutine[Any, Any, None]]:
    """The timer to run beside the exporter when `coder.sync_seconds` is set (else none)."""
    if settings.sync_seconds <= 0:
        return []
    if not settings.url or not settings.token:
        raise ValueError("coder.sync_seconds is set but coder.url or coder.token is not "
                         "(AGENTMETER_CODER_URL, AGENTMETER_CODER_TOKEN)")

    async def run() -> None:
        engine = create_sync_engine(database, application_name=APPLICATION_NAME)
        job = CoderSyncJob(settings, engine)
        registry.register(job)
        try:
            await job.run()
        finally:
            registry.unregister(job)
            engine.dispose()

    return [run()]
