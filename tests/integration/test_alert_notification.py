"""The notification path with the real tools: Prometheus evaluates time-scaled copies of the rules
against an exporter stand-in, Alertmanager routes with a copy of the example configuration, and a
webhook receiver served by the test gets the notifications.

The stand-in serves the exporter's metric names (from ledger.metric_names) in the real exposition
format; the end-to-end test runs the same path against the real limiter and exporter.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from agentmeter.alert_rules import ALERTS_DIR, write_scaled
from ledger import metric_names as m
from tests.support.requirements import require_binary

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]
SCALE = 60  # 15m `for` -> 15s
DEADLINE_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@dataclass
class _Receiver:
    notifications: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        payload["path"] = request.path
        self.notifications.append(payload)
        return web.Response(text="ok")

    def alerts(self, receiver: str) -> list[dict[str, Any]]:
        return [
            alert
            for note in self.notifications
            if note["receiver"] == receiver and note["status"] == "firing"
            for alert in note["alerts"]
        ]


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, int(port)


def fast_alertmanager_config(example: dict[str, Any], receiver_url: str) -> dict[str, Any]:
    """The example configuration with its receivers pointed at the test and its waits at 1s."""
    config = copy.deepcopy(example)

    def speed_up(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route or route is config["route"]:
                route[key] = "1s"
        for child in route.get("routes", []):
            speed_up(child)

    speed_up(config["route"])
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{receiver_url}/{receiver['name']}"
    return config


@pytest.fixture
async def monitoring_stack(tmp_path: Path) -> AsyncIterator[_Receiver]:
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")

    registry = CollectorRegistry()
    registry.register(_LedgerStandIn())  # type: ignore[arg-type]

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    exporter_app = web.Application()
    exporter_app.router.add_get("/metrics", metrics)
    receiver = _Receiver()
    receiver_app = web.Application()
    receiver_app.router.add_post("/{name}", receiver.handle)
    exporter_runner, exporter_port = await _serve(exporter_app)
    receiver_runner, receiver_port = await _serve(receiver_app)

    write_scaled(tmp_path / "rules", SCALE)
    example = yaml.safe_load((ALERTS_DIR / "alertmanager.example.yml").read_text("utf-8"))
    am_config = fast_alertmanager_config(example, f"http://127.0.0.1:{receiver_port}")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_config), encoding="utf-8")
    am_port, prom_port = _free_port(), _free_port()
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(tmp_path / "rules" / "*.yaml")],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                },
                "scrape_configs": [
                    {
                        "job_name": "agentmeter-exporter",
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    log = (tmp_path / "processes.log").open("w")
    processes = [
        subprocess.Popen(
            [
                alertmanager,
                f"--config.file={tmp_path / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        yield receiver
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        await exporter_runner.cleanup()
        await receiver_runner.cleanup()


async def _wait_for(receiver: _Receiver, receiver_name: str, alertname: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        for alert in receiver.alerts(receiver_name):
            if alert["labels"]["alertname"] == alertname:
                return alert
        await asyncio.sleep(0.5)
    seen = [
        (n["receiver"], [a["labels"]["alertname"] for a in n["alerts"]])
        for n in receiver.notifications
    ]
    pytest.fail(f"{alertname} did not reach {receiver_name} in {DEADLINE_SECONDS}s; got {seen}")


async def test_spend_and_pricing_alerts_reach_their_receivers(monitoring_stack: _Receiver) -> None:
    reached = await _wait_for(monitoring_stack, "spend", "AgentmeterUserSpendLimitReached")
    assert reached["labels"] == {
        "alertname": "AgentmeterUserSpendLimitReached",
        "severity": "info",
        "user": "alice",
    }
    assert reached["annotations"]["description"].startswith(
        "alice has spent $10.50 in the current period, reaching their $10.00 limit "
        "(source: user). Their requests get 409 until the period resets at 2026-01-01 00:00:00"
    )
    assert reached["annotations"]["dashboard_url"].endswith(
        "/d/agentmeter-user-detail?var-user=alice"
    )

    pricing = await _wait_for(monitoring_stack, "team-chat", "AgentmeterModelsWithoutPricing")
    assert pricing["labels"] == {
        "alertname": "AgentmeterModelsWithoutPricing",
        "severity": "warning",
    }
    assert "Models without pricing: 1 (local-llm)." in pricing["annotations"]["description"]

    near = await _wait_for(monitoring_stack, "spend", "AgentmeterUserNearSpendLimit")
    assert near["labels"]["user"] == "bob"

    # Spend notifications are grouped per user: no notification mixes two users.
    for note in monitoring_stack.notifications:
        if note["receiver"] == "spend":
            assert set(note["groupLabels"]) == {"user"}
            assert {a["labels"]["user"] for a in note["alerts"]} == {note["groupLabels"]["user"]}
