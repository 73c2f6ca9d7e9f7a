"""The exporter over real HTTP: the same figures as the ledger, valid for promtool, negotiated."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.app import build_registry, exporter_running
from exporter.server import Listening
from exporter.settings import ExporterSettings
from ledger.catalog import find_model
from ledger.engine import create_sync_engine
from ledger.policy_apply import apply_policy
from ledger.policy_file import parse_policy
from ledger.price_versions import POLICY as POLICY_SOURCE
from ledger.price_versions import add_version
from ledger.pricing import PriceSheet, Pricing
from ledger.settings import DatabaseSettings
from tests.support.exporter_seed import NOW, ODD_USERNAMES, POLICY, read, seed_odd_users
from tests.support.gateway import MovableClock
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


async def test_a_price_dated_in_the_future_shows_once_its_time_comes(ledger_url: str) -> None:
    """No `apply` between the two scrapes: the exporter reads the price version in effect."""
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.begin() as conn:
        apply_policy(conn, parse_policy(POLICY))
        applied = datetime.now(UTC)
        claude, gpt5 = (find_model(conn, name) for name in ("claude-sonnet-4-5", "gpt-5"))
        assert claude is not None and gpt5 is not None
        soon = applied + timedelta(hours=1)
        add_version(conn, claude.id, soon, POLICY_SOURCE, "p.yaml",
                    PriceSheet.flat(Pricing(input=4_000_000, output=20_000_000)), applied)
        add_version(conn, gpt5.id, soon, POLICY_SOURCE, "p.yaml", None, applied)  # none
    engine.dispose()
    clock = MovableClock(applied + timedelta(minutes=59))
    async with exporter_running(ExporterSettings(), DatabaseSettings(url=ledger_url),
                                listen="127.0.0.1:0", clock=clock) as where:
        before = _samples(parse_text((await _get(f"{where.url}/metrics"))[2]))
        clock.advance(minutes=2)
        after = _samples(parse_text((await _get(f"{where.url}/metrics"))[2]))

    def price(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], model: str,
              kind: str) -> float | None:
        return samples.get(("agentmeter_model_price_usd_per_million_tokens",
                            frozenset({"model": model, "token_type": kind}.items())))

    assert (price(before, "claude-sonnet-4-5", "input"),
            price(before, "claude-sonnet-4-5", "output")) == (3.0, 15.0)
    assert price(before, "gpt-5", "input") == 1.25
    assert before[("agentmeter_models_without_pricing", frozenset())] == 1.0  # free-model
    assert (price(after, "claude-sonnet-4-5", "input"),
            price(after, "claude-sonnet-4-5", "output")) == (4.0, 20.0)
    # The new version prices no cache kinds: they leave the gauge and show as missing.
    assert price(after, "claude-sonnet-4-5", "cache_read") is None
    assert after[("agentmeter_model_pricing_missing", frozenset(
        {"model": "claude-sonnet-4-5", "token_type": "cache_read", "gap": "price"}.items()))] == 1
    # gpt-5 is unpriced on purpose from then on.
    assert price(after, "gpt-5", "input") is None
    assert after[("agentmeter_models_without_pricing", frozenset())] == 2.0
