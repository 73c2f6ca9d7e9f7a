"""What the soak run stands up: its own PostgreSQL ledger, the fake provider, two limiters and an
exporter as real `agentmeter` processes, and Prometheus -> Alertmanager -> webhook.

The database is a cluster of the run's own (`own_cluster`), because the run stops it. Each
limiter has its own spool directory, as two pods would; a limiter killed with SIGKILL is started
again on the same directory, so its spool is replayed by its successor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

from ledger.engine import create_sync_engine
from ledger.keys import create_key
from ledger.migrate import upgrade
from ledger.policy_apply import apply_policy
from ledger.policy_file import parse_policy
from ledger.settings import DatabaseSettings
from tests.support.monitoring_stack import (
    ManagedProcess,
    MonitoringStack,
    ScrapeJob,
    free_port,
    monitoring_stack,
)
from tests.support.soak_load import ANTHROPIC_MODEL, OPENAI_MODEL, Caller

ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "AGENTMETER_"
LIMITER_JOB, EXPORTER_JOB = "agentmeter-limiter", "agentmeter-exporter"
TIGHT_LIMIT_USD = "0.02"
DEFAULT_LIMIT_USD = 1000
# USD per 1M tokens: an answer (800 in, 60 out) costs 2080 micros on gpt, 3300 on claude.
PRICES = {OPENAI_MODEL: {"input": 2, "output": 8}, ANTHROPIC_MODEL: {"input": 3, "output": 15}}


def username(n: int) -> str:
    return f"user{n:03d}"


def soak_policy(users: int, tight_users: int) -> dict[str, Any]:
    """Everybody under a limit: most under the default, the first few under a tight one."""
    return {
        "limits": {"enabled": True, "period": "month", "default_limit_usd": DEFAULT_LIMIT_USD},
        "users": [{"username": username(n), "name": f"Soak User {n}",
                   **({"limit_usd": TIGHT_LIMIT_USD} if n < tight_users else {})}
                  for n in range(users)],
        "models": [{"name": OPENAI_MODEL, "provider": "openai", "pricing": PRICES[OPENAI_MODEL]},
                   {"name": ANTHROPIC_MODEL, "provider": "anthropic",
                    "pricing": PRICES[ANTHROPIC_MODEL]}],
    }


def prepare_ledger(cluster_url: str, users: int, tight_users: int) -> tuple[str, list[Caller]]:
    """A migrated ledger database in the cluster, the policy applied, one key per user."""
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE agentmeter_soak")
    url = cluster_url.rsplit("/", 1)[0] + "/agentmeter_soak"
    upgrade(url)
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            apply_policy(conn, parse_policy(yaml.safe_dump(soak_policy(users, tight_users))))
            callers = [Caller(username(n), create_key(conn, username(n)).secret)
                       for n in range(users)]
    finally:
        engine.dispose()
    return url, callers


def clean_environment() -> dict[str, str]:
    """The environment without AGENTMETER_* (which would override the config file), able to
    import the project's `tests` package (the fake provider lives there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class ServerProcess:
    """An `agentmeter` (or fake provider) process that can be killed and started again."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.popen.pid

    async def start(self, ready_path: str = "/healthz") -> None:
        with self.log_path.open("ab") as log:
            popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env,
                                     cwd=self.log_path.parent)
        self.process = ManagedProcess(self.name, popen, self.log_path)
        await self.process.wait_ready(self.url + ready_path)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flushing; whatever was only in memory is gone."""
        assert self.process is not None
        os.kill(self.pid, signal.SIGKILL)
        self.process.popen.wait()

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()


@dataclass
class Gateway:
    upstream: ServerProcess
    limiters: list[ServerProcess]
    exporter: ServerProcess
    spool_dirs: list[Path]


@asynccontextmanager
async def gateway(workdir: Path, ledger_url: str, upstream_timeout: float
                  ) -> AsyncIterator[Gateway]:
    """The fake provider, two limiters and an exporter on one ledger, all started and ready."""
    python = sys.executable
    env = clean_environment()
    upstream_port = free_port()
    upstream = ServerProcess(
        "fake upstream", [python, "-m", "tests.support.soak_upstream", "--port",
                          str(upstream_port), "--hang-seconds", str(upstream_timeout + 1.5)],
        env, workdir / "upstream.log", upstream_port)
    providers = {name: {"base_url": upstream.url, "api_key": f"sk-{name}-soak"}
                 for name in ("openai", "anthropic")}
    config = workdir / "agentmeter.yaml"
    config.write_text(yaml.safe_dump({
        "database": {"url": ledger_url},
        "limiter": {"upstream_timeout_seconds": upstream_timeout, "providers": providers},
        "log_level": "warning",
    }), encoding="utf-8")
    limiters, spools = [], []
    for n in range(2):
        port = free_port()
        spools.append(workdir / f"spool-{n}")
        limiters.append(ServerProcess(
            f"limiter {n}", [python, "-m", "agentmeter", "limiter", "--listen",
                             f"127.0.0.1:{port}", "--config", str(config)],
            {**env, "AGENTMETER_LIMITER_SPOOL_DIR": str(spools[-1])},
            workdir / f"limiter-{n}.log", port))
    exporter_port = free_port()
    exporter = ServerProcess(
        "exporter", [python, "-m", "agentmeter", "exporter", "--listen",
                     f"127.0.0.1:{exporter_port}", "--config", str(config)],
        env, workdir / "exporter.log", exporter_port)
    everything = [upstream, *limiters, exporter]
    try:
        await upstream.start("/soak/stats")
        await asyncio.gather(*(server.start() for server in (*limiters, exporter)))
        yield Gateway(upstream, limiters, exporter, spools)
    finally:
        await asyncio.gather(*(server.stop() for server in everything))


@asynccontextmanager
async def monitoring(directory: Path, gw: Gateway, *, scale: float,
                     interval: str = "1s") -> AsyncIterator[MonitoringStack]:
    """Prometheus scraping both limiters as one job (rules scaled by `scale`), Alertmanager
    configured like the example, every receiver a webhook of the run's own."""
    jobs = [*(ScrapeJob(LIMITER_JOB, s.url.removeprefix("http://")) for s in gw.limiters),
            ScrapeJob(EXPORTER_JOB, gw.exporter.url.removeprefix("http://"))]
    async with monitoring_stack(directory, jobs, scale=scale, interval=interval) as stack:
        yield stack
