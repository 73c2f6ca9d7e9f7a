"""The exporter over real HTTP: the same figures as the ledger, valid for promtool, negotiated."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.app import build_registry, exporter_running
from exporter.server import Listening
from exporter.settings import ExporterSettings
from ledger.settings import DatabaseSettings
from tests.support.exporter_seed import NOW, ODD_USERNAMES, read, seed_odd_users
from tests.support.requirements import require_binary

OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
# Values that differ between two scrapes by nature.
# Durations vary per scrape; the oldest message is measured by the exporter's background
# maintenance, which may finish between the HTTP scrape and the direct read.
VOLATILE = {"agentmeter_collector_duration_seconds",
            "agentmeter_ledger_messages_oldest_timestamp_seconds"}


@pytest.fixture
async def exporter(ledger_url: str) -> AsyncIterator[tuple[str, Listening]]:
    seed_odd_users(ledger_url)
    async with exporter_running(ExporterSettings(), DatabaseSettings(url=ledger_url),
                                listen="127.0.0.1:0", clock=lambda: NOW) as where:
        yield ledger_url, where


async def _get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.headers["Content-Type"], await response.text()


def _samples(families) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:  # type: ignore[no-untyped-def]
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in families for s in f.samples if s.name not in VOLATILE}


async def test_http_scrape_equals_the_ledger(exporter: tuple[str, Listening]) -> None:
    url, where = exporter
    status, content_type, body = await _get(f"{where.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    scraped = _samples(parse_text(body))

    registry, close = build_registry(ExporterSettings(), DatabaseSettings(url=url),
                                     clock=lambda: NOW)
    try:
        direct = {key: v for key, v in read(registry).items() if key[0] not in VOLATILE}
    finally:
        close()
    assert scraped == direct
    spend = {dict(labels)["user"]: v for (name, labels), v in scraped.items()
             if name == "agentmeter_user_spend_usd"}
    for i, name in enumerate(ODD_USERNAMES):
        assert spend[name] == (1000 + i) * 3 / 1_000_000
    assert scraped["agentmeter_collector_success", frozenset({("collector", "ledger")})] == 1.0


async def test_openmetrics_is_negotiated(exporter: tuple[str, Listening]) -> None:
    _, where = exporter
    status, content_type, body = await _get(f"{where.url}/metrics", OPENMETRICS_ACCEPT)
    assert status == 200
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith("# EOF\n")
    assert "# TYPE agentmeter_spend_usd counter" in body
    families = {f.name: f for f in parse_openmetrics(body)}
    assert families["agentmeter_spend_usd"].type == "counter"
    _, _, plain = await _get(f"{where.url}/metrics")
    assert _samples(families.values()) == _samples(parse_text(plain))


async def test_promtool_finds_nothing_to_complain_about(exporter: tuple[str, Listening]) -> None:
    promtool = require_binary("promtool")
    _, where = exporter
    # promtool lints the text format; the OpenMetrics page is checked by its parser above.
    _, _, body = await _get(f"{where.url}/metrics")
    assert "agentmeter_spend_usd_total{" in body and 'user="quote\\"d"' in body
    checked = subprocess.run([promtool, "check", "metrics"], input=body.encode("utf-8"),
                             capture_output=True, timeout=60)
    report = (checked.stdout + checked.stderr).decode()
    assert checked.returncode == 0, report
    assert report.strip() == ""


async def test_healthz(exporter: tuple[str, Listening]) -> None:
    _, where = exporter
    await _get(f"{where.url}/metrics")
    status, content_type, body = await _get(f"{where.url}/healthz")
    assert status == 200
    assert content_type.startswith("application/json")
    assert '"ledger": true' in body
