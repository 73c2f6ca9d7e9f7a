"""The database stops mid-run: scrapes keep answering, the ledger collector says 0, then recovers.

Uses a PostgreSQL cluster of the test's own (never the shared one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import exporter_running
from exporter.settings import ExporterSettings
from ledger.migrate import upgrade
from ledger.settings import DatabaseSettings
from tests.support.exporter_seed import NOW, seed
from tests.support.pg_cluster import own_cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class Neighbour:
    """Another source that keeps working while the database is away."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("agentmeter_test_neighbour", "Still here.", value=1.0)


async def _scrape(url: str) -> tuple[int, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, \
            session.get(f"{url}/metrics") as response:
        text = await response.text()
        return response.status, {(s.name, frozenset(s.labels.items())): s.value
                                 for f in text_string_to_metric_families(text)
                                 for s in f.samples}


def _success(samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
             collector: str) -> float | None:
    return samples.get(("agentmeter_collector_success", frozenset({("collector", collector)})))


async def test_scrape_survives_the_database_going_away(caplog: pytest.LogCaptureFixture) -> None:
    with own_cluster() as cluster:
        upgrade(cluster.url)
        seed(cluster.url)
        database = DatabaseSettings(url=cluster.url, connect_timeout_seconds=1.0)
        settings = ExporterSettings(collector_timeout_seconds=5.0)
        async with exporter_running(settings, database, listen="127.0.0.1:0", clock=lambda: NOW,
                                    sources={"neighbour": Neighbour()}) as where:
            status, samples = await _scrape(where.url)
            assert status == 200
            assert _success(samples, "ledger") == 1.0
            assert samples["agentmeter_user_spend_usd", frozenset({("user", "bob")})] == 1.25

            await asyncio.to_thread(cluster.stop)
            with caplog.at_level(logging.INFO, logger="agentmeter.exporter"):
                for _ in range(3):
                    started = time.monotonic()
                    status, samples = await _scrape(where.url)
                    assert time.monotonic() - started < settings.collector_timeout_seconds + 2
                    assert status == 200
                    assert _success(samples, "ledger") == 0.0
                    assert _success(samples, "neighbour") == 1.0
                    assert samples["agentmeter_test_neighbour", frozenset()] == 1.0
                    assert not any(name == "agentmeter_user_spend_usd" for name, _ in samples)
                errors = [r for r in caplog.records
                          if r.levelno >= logging.ERROR and "ledger" in r.getMessage()]
                assert len(errors) == 1  # once per outage, not once per scrape

                await asyncio.to_thread(cluster.start)
                deadline = time.monotonic() + 30
                while True:
                    status, samples = await _scrape(where.url)
                    assert status == 200
                    if _success(samples, "ledger") == 1.0 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
            assert _success(samples, "ledger") == 1.0
            assert samples["agentmeter_user_spend_usd", frozenset({("user", "bob")})] == 1.25
            assert any("recovered" in r.getMessage() for r in caplog.records)
