"""Wiring of the exporter: the registry with its collectors, and the server that publishes it.

`agentmeter exporter` and `agentmeter serve` call `run_exporter`; tests and benchmarks use
`build_registry` with a fresh registry each. The caller may hand in its own registry or extra
collectors (the log-events counter lives in the composition root), so nothing here is global.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from exporter.ledger_collector import Clock, LedgerCollector
from exporter.ledger_maintenance import run_maintenance
from exporter.retention_collector import RetentionCollector
from exporter.self_health import SelfHealthCollector, Source
from exporter.server import Listening, create_app, listening
from exporter.settings import ExporterSettings
from ledger.engine import create_sync_engine
from ledger.settings import DatabaseSettings, LedgerSettings

LOGGER = logging.getLogger("agentmeter.exporter")
# How the exporter's ledger connections show in pg_stat_activity.
APPLICATION_NAME = "agentmeter-exporter"

Closer = Callable[[], None]


@dataclass(frozen=True)
class Exporter:
    registry: CollectorRegistry
    health: SelfHealthCollector
    engine: Engine
    close: Closer


def _kubernetes_source(config: ExporterSettings) -> tuple[Source, Closer] | None:
    if not config.kubernetes.enabled:
        return None
    # Imported only when enabled: the kubernetes client is heavy and needs a cluster to talk to.
    from exporter.kubernetes import KubernetesCollector

    collector = KubernetesCollector(config.kubernetes)
    collector.start()
    return collector, collector.stop


def build_exporter(
    config: ExporterSettings,
    database: DatabaseSettings,
    *,
    ledger: LedgerSettings | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    extra_collectors: Iterable[Collector] = (),
    sources: dict[str, Source] | None = None,
) -> Exporter:
    """Collectors wrapped in self-health; `sources` adds more (or replaces them by name)."""
    registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
    closers: list[Closer] = []

    def close() -> None:
        for closer in reversed(closers):
            try:
                closer()
            except Exception:
                LOGGER.exception("exporter shutdown step failed")

    try:
        # Validate the cheap things before anything starts threads or opens connections.
        health_budget = config.collector_timeout_seconds
        if health_budget <= 0:
            raise ValueError(f"exporter.collector_timeout_seconds must be positive: "
                             f"{health_budget}")
        engine = create_sync_engine(database, application_name=APPLICATION_NAME)
        closers.append(engine.dispose)
        named: dict[str, Source] = {
            "ledger": LedgerCollector(engine, config, clock=clock),
            "retention": RetentionCollector(engine, ledger or LedgerSettings()),
        }
        kubernetes = _kubernetes_source(config)
        if kubernetes is not None:
            named["kubernetes"], stop = kubernetes
            closers.append(stop)
        named.update(sources or {})
        health = SelfHealthCollector(named, timeout_seconds=health_budget)
        registry.register(health)
        for collector in extra_collectors:
            registry.register(collector)
    except BaseException:
        close()
        raise
    return Exporter(registry, health, engine, close)


def build_registry(
    config: ExporterSettings,
    database: DatabaseSettings,
    *,
    clock: Callable[[], datetime] | None = None,
    registry: CollectorRegistry | None = None,
    extra_collectors: Iterable[Collector] = (),
) -> tuple[CollectorRegistry, Closer]:
    """The registry to scrape and the function that releases its engine and watches."""
    exporter = build_exporter(config, database, clock=clock, registry=registry,
                              extra_collectors=extra_collectors)
    return exporter.registry, exporter.close


@asynccontextmanager
async def exporter_running(
    config: ExporterSettings,
    database: DatabaseSettings,
    *,
    listen: str | None = None,
    ledger: LedgerSettings | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    extra_collectors: Iterable[Collector] = (),
    sources: dict[str, Source] | None = None,
) -> AsyncIterator[Listening]:
    """The exporter serving on `listen` (default `config.listen`) for the duration of the
    block, maintaining the ledger in the background (ledger.prune)."""
    ledger = ledger or LedgerSettings()
    exporter = build_exporter(config, database, ledger=ledger, clock=clock, registry=registry,
                              extra_collectors=extra_collectors, sources=sources)
    maintenance = asyncio.create_task(
        run_maintenance(exporter.engine, ledger, clock or (lambda: datetime.now(UTC))))
    try:
        app = create_app(exporter.registry, health=exporter.health.status)
        async with listening(app, listen or config.listen) as where:
            LOGGER.info("exporter listening on %s/metrics", where.url,
                        extra={"listen": f"{where.host}:{where.port}"})
            yield where
    finally:
        maintenance.cancel()
        with suppress(asyncio.CancelledError):
            await maintenance
        # The Kubernetes watches and the engine's pool are released off the loop.
        await asyncio.get_running_loop().run_in_executor(None, exporter.close)


async def run_exporter(
    config: ExporterSettings,
    database: DatabaseSettings,
    *,
    listen: str | None = None,
    ledger: LedgerSettings | None = None,
    registry: CollectorRegistry | None = None,
    extra_collectors: Iterable[Collector] = (),
) -> None:
    """Serve until cancelled (Ctrl-C or the other listener of `agentmeter serve` stopping)."""
    async with exporter_running(config, database, listen=listen, ledger=ledger,
                                registry=registry, extra_collectors=extra_collectors):
        await asyncio.Event().wait()


def serve(config: ExporterSettings, database: DatabaseSettings, *, listen: str | None = None,
          ledger: LedgerSettings | None = None, registry: CollectorRegistry | None = None,
          extra_collectors: Iterable[Collector] = ()) -> None:
    """Blocking entry point for `agentmeter exporter`."""
    with suppress(KeyboardInterrupt):
        asyncio.run(run_exporter(config, database, listen=listen, ledger=ledger,
                                 registry=registry, extra_collectors=extra_collectors))
