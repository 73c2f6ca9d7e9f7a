"""A real Prometheus scrapes the running exporter; PromQL returns each seeded user's spend."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from exporter.app import exporter_running
from exporter.settings import ExporterSettings
from ledger.settings import DatabaseSettings
from tests.support.exporter_seed import NOW, ODD_USERNAMES, Expected, seed_odd_users
from tests.support.requirements import require_binary

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

JOB = "agentmeter-exporter"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[object]:
    """`start(target_port) -> base URL` of a Prometheus scraping that port every second."""
    binary = require_binary("prometheus")
    processes: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(target_port: int) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: {JOB}\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n")
        port = _free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        logs.append(log)
        processes.append(subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT))
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for log in logs:
        log.close()


async def _query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict]:  # type: ignore[type-arg]
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        if response.status != 200:
            return []
        answer = await response.json()
    result: list[dict] = answer["data"]["result"]  # type: ignore[type-arg]
    return result


async def _until(session: aiohttp.ClientSession, base: str, promql: str, count: int,
                 timeout: float = 60.0) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    result: list[dict] = []  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        try:
            result = await _query(session, base, promql)
        except aiohttp.ClientError:
            result = []  # Prometheus still starting
        if len(result) >= count:
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"{promql}: {len(result)} series after {timeout}s, wanted {count}")


@pytest.fixture
async def seeded(pg_url: str) -> AsyncIterator[tuple[str, Expected]]:
    yield pg_url, seed_odd_users(pg_url)


async def test_prometheus_scrapes_each_users_spend(seeded, prometheus_for) -> None:  # type: ignore[no-untyped-def]
    url, expected = seeded
    async with exporter_running(ExporterSettings(), DatabaseSettings(url=url),
                                listen="127.0.0.1:0", clock=lambda: NOW) as where:
        base = prometheus_for(where.port)
        async with aiohttp.ClientSession() as session:
            up = await _until(session, base, f'up{{job="{JOB}"}} == 1', 1)
            assert up[0]["metric"]["job"] == JOB
            users = set(expected.period_spend) | {"alice", "bob", "carol", "dave", "erin"}
            result = await _until(session, base, "agentmeter_user_spend_usd", len(users))
            spend = {r["metric"]["user"]: float(r["value"][1]) for r in result}
            assert set(spend) == users
            for user in users:
                assert spend[user] == expected.period_spend[user] / 1_000_000, user
            for i, name in enumerate(ODD_USERNAMES):
                assert spend[name] == (1000 + i) * 3 / 1_000_000
            success = await _until(session, base,
                                   'agentmeter_collector_success{collector="ledger"} == 1', 1)
            assert success[0]["metric"]["job"] == JOB
            bob = await _until(session, base,
                               'sum by (user) (agentmeter_spend_usd_total{user="bob"})', 1)
            assert float(bob[0]["value"][1]) == sum(
                v for (user, _), v in expected.spend.items() if user == "bob") / 1_000_000
