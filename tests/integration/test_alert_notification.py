"""The notification path with the real tools: Prometheus evaluates time-scaled copies of the rules
against an exporter stand-in, Alertmanager routes with a copy of the example configuration, and a
webhook receiver served by the test gets the notifications.

The stand-in serves the exporter's metric names (from ledger.metric_names) in the real exposition
format; tests/e2e/test_alert_spend_pricing.py runs the same path against the real limiter and
exporter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from ledger import metric_names as m
from tests.support.local_server import LocalServer
from tests.support.monitoring_stack import MonitoringStack, ScrapeJob, monitoring_stack

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]
SCALE = 60  # 15m `for` -> 15s
DEADLINE_SECONDS = 90


class _LedgerStandIn:
    """What the exporter publishes for: alice over her limit, bob at 85%, one unpriced model."""

    def collect(self) -> Iterator[Metric]:
        spend = GaugeMetricFamily(m.USER_SPEND_USD, "spend", labels=["user"])
        spend.add_metric(["alice"], 10.5)
        spend.add_metric(["bob"], 8.5)
        limit = GaugeMetricFamily(m.USER_LIMIT_USD, "limit", labels=["user", "source"])
        limit.add_metric(["alice", "user"], 10.0)
        limit.add_metric(["bob", "default"], 10.0)
        ratio = GaugeMetricFamily(m.USER_LIMIT_UTILIZATION_RATIO, "ratio", labels=["user"])
        ratio.add_metric(["alice"], 1.05)
        ratio.add_metric(["bob"], 0.85)
        end = GaugeMetricFamily(m.LIMITS_PERIOD_END_TIMESTAMP_SECONDS, "period end")
        end.add_metric([], 1767225600.0)
        unpriced = GaugeMetricFamily(m.MODELS_WITHOUT_PRICING, "models without pricing")
        unpriced.add_metric([], 1.0)
        missing = GaugeMetricFamily(
            m.MODEL_PRICING_MISSING, "missing", labels=["model", "token_type"]
        )
        missing.add_metric(["local-llm", "input"], 1.0)
        missing.add_metric(["local-llm", "output"], 1.0)
        yield from (spend, limit, ratio, end, unpriced, missing)


@pytest.fixture
async def stand_in_exporter() -> AsyncIterator[int]:
    registry = CollectorRegistry()
    registry.register(_LedgerStandIn())  # type: ignore[arg-type]

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with LocalServer(lambda: app) as server:
        yield server.port


@pytest.fixture
async def stack(stand_in_exporter: int, tmp_path: Path) -> AsyncIterator[MonitoringStack]:
    jobs = [ScrapeJob("agentmeter-exporter", f"127.0.0.1:{stand_in_exporter}")]
    async with monitoring_stack(tmp_path, jobs, scale=SCALE) as running_stack:
        yield running_stack


async def test_spend_and_pricing_alerts_reach_their_receivers(stack: MonitoringStack) -> None:
    reached = await stack.wait_for_alert("spend", "AgentmeterUserSpendLimitReached",
                                         timeout=DEADLINE_SECONDS)
    assert reached["labels"] == {
        "alertname": "AgentmeterUserSpendLimitReached",
        "severity": "info",
        "user": "alice",
    }
    assert reached["annotations"]["description"].startswith(
        "alice has spent $10.50 in the current period, reaching their $10.00 limit "
        "(source: user). Their requests are refused (409 unless "
        "limiter.limit_exceeded_status says otherwise) until the period resets at "
        "2026-01-01 00:00:00"
    )
    assert reached["annotations"]["dashboard_url"].endswith(
        "/d/agentmeter-user-detail?var-user=alice"
    )

    pricing = await stack.wait_for_alert("team-chat", "AgentmeterModelsWithoutPricing",
                                         timeout=DEADLINE_SECONDS)
    assert pricing["labels"] == {
        "alertname": "AgentmeterModelsWithoutPricing",
        "severity": "warning",
    }
    assert "Models without pricing: 1 (local-llm)." in pricing["annotations"]["description"]

    near = await stack.wait_for_alert("spend", "AgentmeterUserNearSpendLimit",
                                      timeout=DEADLINE_SECONDS)
    assert near["labels"]["user"] == "bob"

    # Spend notifications are grouped per user: no notification mixes two users.
    for note in stack.receiver.notifications:
        if note["receiver"] == "spend":
            assert set(note["groupLabels"]) == {"user"}
            assert {a["labels"]["user"] for a in note["alerts"]} == {note["groupLabels"]["user"]}
