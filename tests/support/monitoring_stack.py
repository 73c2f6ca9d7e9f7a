"""A real Prometheus and a real Alertmanager for tests that follow an alert to its receiver.

Prometheus scrapes the jobs a test names every second and evaluates time-scaled copies of the
rules (`write_scaled`, never hand-edited copies); Alertmanager routes with the example
configuration, its waits cut to one second and every receiver pointed at a webhook served by the
test itself. Everything is started inside an async context manager that stops it again however
the test ends, so a failing assertion never leaves a process behind.

The webhook receiver runs on the test's event loop: tests that use it must not block the loop
(use the async SDK clients and `asyncio` subprocesses while the stack is up).
"""

from __future__ import annotations

import asyncio
import copy
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from agentmeter.alert_rules import ALERTS_DIR, write_scaled
from tests.support.local_server import LocalServer
from tests.support.requirements import require_binary

# How long a process gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Processes -----------------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """A child process whose output goes to a log file that failure messages quote."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return text[-chars:]

    async def wait_ready(self, url: str, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Until `url` answers 200; fails with the log if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        client_timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while True:
                code = self.popen.poll()
                if code is not None:
                    pytest.fail(f"{self.name} exited with {code} before {url} answered:\n"
                                f"{self.log_tail()}")
                try:
                    async with session.get(url) as answer:
                        if answer.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{self.name}: {url} did not answer within {timeout:.0f}s:\n"
                                f"{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM, then SIGKILL if it lingers; waits without blocking the event loop."""
        if self.popen.poll() is None:
            self.popen.terminate()
            if not await self._exited_within(timeout):
                self.popen.kill()
                await self._exited_within(timeout)
        self.popen.wait()

    async def _exited_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.popen.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


async def stop_together(*processes: ManagedProcess) -> None:
    """Stops several processes at once (each one's own shutdown wait overlaps the others)."""
    await asyncio.gather(*(process.stop() for process in processes))


@asynccontextmanager
async def running(name: str, args: Sequence[str], log_path: Path, *,
                  env: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> AsyncIterator[ManagedProcess]:
    """Starts `args`; stops the process on the way out, whatever happened inside."""
    with log_path.open("wb") as log:
        popen = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=cwd,
                                 env=dict(env) if env is not None else None)
        process = ManagedProcess(name, popen, log_path)
        try:
            yield process
        finally:
            await process.stop()


# Alertmanager configuration and the webhook receiver -----------------------------------------


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


@dataclass
class WebhookReceiver:
    """Every notification Alertmanager sent, in order, with the path it was sent to."""

    notifications: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        payload["path"] = request.path
        self.notifications.append(payload)
        return web.Response(text="ok")

    def alerts(self, receiver: str, status: str = "firing") -> list[dict[str, Any]]:
        return [
            alert
            for note in self.notifications
            if note["receiver"] == receiver
            for alert in note["alerts"]
            if alert["status"] == status
        ]

    def find(self, receiver: str, alertname: str, labels: Mapping[str, str]
             ) -> dict[str, Any] | None:
        for alert in self.alerts(receiver):
            got = alert["labels"]
            if got.get("alertname") == alertname and all(
                    got.get(k) == v for k, v in labels.items()):
                return alert
        return None

    def summary(self) -> list[tuple[str, list[str]]]:
        return [(n["receiver"], [a["labels"]["alertname"] for a in n["alerts"]])
                for n in self.notifications]


# The stack -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeJob:
    name: str  # several ScrapeJobs with one name are one job scraping each target
    target: str  # host:port
    metrics_path: str = "/metrics"


@dataclass
class MonitoringStack:
    receiver: WebhookReceiver
    prometheus_url: str
    alertmanager_url: str
    prometheus: ManagedProcess
    alertmanager: ManagedProcess
    session: aiohttp.ClientSession

    async def api(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.prometheus_url}{path}", params=params) as answer:
            payload = await answer.json()
        assert payload["status"] == "success", payload
        return payload["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result vector."""
        data = await self.api("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def wait_for_value(self, expr: str, accept: Callable[[float], bool], *,
                             timeout: float) -> float:
        """The first value of `expr` that `accept` takes, polled until `timeout`."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = await self.query(expr)
            for series in result:
                value = float(series["value"][1])
                if accept(value):
                    return value
            await asyncio.sleep(0.5)
        pytest.fail(f"{expr} never gave an accepted value in {timeout:.0f}s; last: {result}")

    async def wait_for_alert(self, receiver: str, alertname: str, *, timeout: float,
                             **labels: str) -> dict[str, Any]:
        """The first firing `alertname` (with these labels) that reached `receiver`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alert = self.receiver.find(receiver, alertname, labels)
            if alert is not None:
                return alert
            await asyncio.sleep(0.25)
        pending = await self.api("/api/v1/alerts")
        states = [(a["labels"].get("alertname"), a["state"]) for a in pending["alerts"]]
        pytest.fail(f"{alertname}{labels} did not reach {receiver!r} in {timeout:.0f}s; "
                    f"notifications: {self.receiver.summary()}; Prometheus alerts: {states}")


def _prometheus_config(jobs: Sequence[ScrapeJob], rules: Path, alertmanager_port: int,
                       interval: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "scrape_timeout": interval},
        "rule_files": [str(rules / "*.yaml")],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": [
            {"job_name": name, "metrics_path": path, "static_configs": [{"targets": targets}]}
            for (name, path), targets in _targets_by_job(jobs).items()
        ],
    }


def _targets_by_job(jobs: Sequence[ScrapeJob]) -> dict[tuple[str, str], list[str]]:
    """ScrapeJobs sharing a name are one job with several targets (two limiter replicas)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for job in jobs:
        grouped.setdefault((job.name, job.metrics_path), []).append(job.target)
    return grouped


@asynccontextmanager
async def monitoring_stack(directory: Path, jobs: Sequence[ScrapeJob], *, scale: float,
                           interval: str = "1s") -> AsyncIterator[MonitoringStack]:
    """Prometheus (rules scaled by `scale`) -> Alertmanager (fast example config) -> receiver."""
    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager")
    directory.mkdir(parents=True, exist_ok=True)
    receiver = WebhookReceiver()
    async with AsyncExitStack() as stack:
        receiver_server = await stack.enter_async_context(LocalServer(receiver.app))

        rules = directory / "rules"
        write_scaled(rules, scale)
        example = yaml.safe_load((ALERTS_DIR / "alertmanager.example.yml").read_text("utf-8"))
        am_config = fast_alertmanager_config(example, receiver_server.base_url)
        (directory / "alertmanager.yml").write_text(yaml.safe_dump(am_config), encoding="utf-8")
        am_port, prom_port = free_port(), free_port()
        (directory / "prometheus.yml").write_text(
            yaml.safe_dump(_prometheus_config(jobs, rules, am_port, interval)), encoding="utf-8")

        alertmanager = await stack.enter_async_context(running(
            "alertmanager",
            [alertmanager_bin, f"--config.file={directory / 'alertmanager.yml'}",
             f"--storage.path={directory / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            directory / "alertmanager.log"))
        prometheus = await stack.enter_async_context(running(
            "prometheus",
            [prometheus_bin, f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            directory / "prometheus.log"))
        am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
        stack.push_async_callback(stop_together, prometheus, alertmanager)
        await asyncio.gather(alertmanager.wait_ready(f"{am_url}/-/ready"),
                             prometheus.wait_ready(f"{prom_url}/-/ready"))
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)))
        yield MonitoringStack(receiver, prom_url, am_url, prometheus, alertmanager, session)
