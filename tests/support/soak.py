"""The soak scenario, shared by `bench/soak.py` (minutes, hundreds of requests a second) and
`tests/e2e/test_soak_short.py` (about a minute, a lower rate, a shorter outage).

Two limiters and an exporter run on one PostgreSQL ledger of the run's own; Prometheus scrapes
them with time-scaled copies of the project's rules and Alertmanager delivers to a webhook. Under
an open-loop load of 200 users with limits (OpenAI and Anthropic, streamed and not, a few
percent of requests meeting a provider fault or a client that gives up midway), the run:

1. stops PostgreSQL for `outage_seconds` (requests must keep being served, fail-open), and
   SIGKILLs limiter 1 in the middle of the outage, while its spool holds records; the limiter is
   started again once the database is back, on the same spool;
2. SIGKILLs limiter 1 again later, with the database up (records being group-committed), and
   starts it again at once;
3. waits for every spool to drain and compares the ledger with what each client was answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from sqlalchemy import text

from ledger.engine import create_sync_engine
from ledger.settings import DatabaseSettings
from limiter.relay.dialects.base import estimate_tokens
from tests.support.monitoring_stack import MonitoringStack
from tests.support.pg_cluster import OwnCluster, own_cluster
from tests.support.soak_load import ANTHROPIC_MODEL, OPENAI_MODEL, LoadGenerator, Result
from tests.support.soak_report import REQUIRED_ALERTS, Kill, LedgerRow, SoakReport
from tests.support.soak_stack import Gateway, gateway, monitoring, prepare_ledger, rss_bytes
from tests.support.soak_upstream import ANSWER_TEXT, ANSWER_USAGE, STATS_PATH

KILLED = 1  # the limiter that is killed; limiter 0 runs throughout (its RSS is the figure)
RESTART_PAUSE_SECONDS = 0.5


@dataclass(frozen=True)
class SoakPlan:
    rate: float  # requests started per second
    duration: float  # seconds of load after the warm-up
    outage_at: float  # seconds into the load when PostgreSQL stops
    outage_seconds: float
    kill_in_outage_after: float  # seconds into the outage when limiter 1 is killed
    steady_kill_at: float  # seconds into the load of the second kill (database up)
    # `for` and ranges of the rules are divided by this (AgentmeterUsageSpoolBacklog's 10m
    # must fit in the outage, AgentmeterLimiterFailingOpen's 5m window must end well after it).
    alert_scale: float
    users: int = 200
    tight_users: int = 10  # users whose limit is reached within seconds (409s under load)
    upstream_timeout: float = 2.0
    rss_sample_at: float = 5.0  # seconds into the load when the starting RSS is taken
    drain_timeout: float = 120.0
    alert_timeout: float = 90.0


def bench_plan(duration: float = 180.0, rate: float = 300.0) -> SoakPlan:
    """The release-gate run: a 30 s outage, rules at 1/40 (FailingOpen 7.5 s, backlog 15 s)."""
    return SoakPlan(rate=rate, duration=duration, outage_at=min(30.0, duration / 6),
                    outage_seconds=30.0, kill_in_outage_after=20.0,
                    steady_kill_at=max(duration * 0.7, min(30.0, duration / 6) + 45),
                    alert_scale=40, rss_sample_at=10.0)


def short_plan() -> SoakPlan:
    """The test-suite run: about a minute of load at a lower rate, a 7 s outage, rules at
    1/120 (FailingOpen 2.5 s, backlog 5 s)."""
    return SoakPlan(rate=60, duration=40, outage_at=8, outage_seconds=7,
                    kill_in_outage_after=4, steady_kill_at=28, alert_scale=120)


def full_cost() -> dict[str, int]:
    """The most one answer may be charged per model (prices: soak_stack.PRICES).

    A cut stream is charged the provider's counts where it sent them and otherwise an estimate
    from the relayed text (about 4 characters a token), which for a nearly whole answer may
    exceed the provider's own output count; never more than the estimate of the whole text.
    """
    output = max(ANSWER_USAGE.output, estimate_tokens(len(ANSWER_TEXT)))
    return {OPENAI_MODEL: ANSWER_USAGE.input * 2 + output * 8,
            ANTHROPIC_MODEL: ANSWER_USAGE.input * 3 + output * 15}


def spooled_lines(directory: Path) -> int:
    if not directory.exists():
        return 0
    return sum(1 for path in directory.glob("*.jsonl")
               for line in path.read_bytes().splitlines() if line.strip())


class Timeline:
    """The faults, each at its time into the load, while the load runs."""

    def __init__(self, plan: SoakPlan, gw: Gateway, cluster: OwnCluster,
                 load: LoadGenerator) -> None:
        self.plan, self.gw, self.cluster, self.load = plan, gw, cluster, load
        self.kills: list[Kill] = []
        self.outage = (0.0, 0.0)
        self.rss_start = 0
        self.rss_samples: list[int] = []
        self._t0 = 0.0

    async def _at(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, self._t0 + seconds - time.monotonic()))

    async def _kill(self) -> None:
        self.load.up[KILLED] = False
        limiter = self.gw.limiters[KILLED]
        at = time.monotonic()
        limiter.kill()
        self.kills.append(Kill(KILLED, at, spooled_lines(self.gw.spool_dirs[KILLED])))

    async def _restart(self) -> None:
        await self.gw.limiters[KILLED].start()
        self.load.up[KILLED] = True

    async def sample_rss(self, every_seconds: float = 10.0) -> None:
        """Limiter 0's RSS through the run (peak after the outage, or steady growth?)."""
        while True:
            await asyncio.sleep(every_seconds)
            self.rss_samples.append(rss_bytes(self.gw.limiters[0].pid))

    async def run(self) -> None:
        plan = self.plan
        self._t0 = time.monotonic()
        await self._at(plan.rss_sample_at)
        self.rss_start = rss_bytes(self.gw.limiters[0].pid)
        await self._at(plan.outage_at)
        start = time.monotonic()
        await asyncio.to_thread(self.cluster.stop)
        await self._at(plan.outage_at + plan.kill_in_outage_after)
        await self._kill()
        await self._at(plan.outage_at + plan.outage_seconds)
        await asyncio.to_thread(self.cluster.start)
        self.outage = (start, time.monotonic())
        await self._restart()
        await self._at(plan.steady_kill_at)
        await self._kill()
        await asyncio.sleep(RESTART_PAUSE_SECONDS)
        await self._restart()


async def wait_drained(gw: Gateway, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(spooled_lines(d) for d in gw.spool_dirs):
        if time.monotonic() > deadline:
            left = [spooled_lines(d) for d in gw.spool_dirs]
            raise AssertionError(f"spools not drained in {timeout:.0f}s: {left}")
        await asyncio.sleep(0.5)


async def wait_alerts_resolved(stack: MonitoringStack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, resolved = alert_states(stack)
        if all(alert in resolved for alert in REQUIRED_ALERTS):
            return
        await asyncio.sleep(0.5)


def alert_states(stack: MonitoringStack) -> tuple[set[str], set[str]]:
    fired: set[str] = set()
    resolved: set[str] = set()
    for note in stack.receiver.notifications:
        for alert in note["alerts"]:
            name = alert["labels"]["alertname"]
            (fired if alert["status"] == "firing" else resolved).add(name)
    return fired, resolved


def read_ledger(url: str) -> tuple[dict[str, LedgerRow], int]:
    """Records per request id (the chat id), and records that carry no chat id."""
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("""
                SELECT c.external_id, count(*),
                       sum(CASE WHEN m.partial THEN 1 ELSE 0 END), max(m.cost_micros),
                       max(mo.name)
                FROM messages m JOIN chats c ON c.id = m.chat_id
                JOIN models mo ON mo.id = m.model_id
                GROUP BY c.external_id""")).all()
            without_chat = conn.execute(
                text("SELECT count(*) FROM messages WHERE chat_id IS NULL")).scalar_one()
    finally:
        engine.dispose()
    ledger = {str(r[0]): LedgerRow(int(r[1]), int(r[2]), r[3], str(r[4])) for r in rows}
    return ledger, int(without_chat)


async def fail_open_counts(gw: Gateway) -> list[str]:
    """`agentmeter_limiter_fail_open_total` of each limiter as it stands (the restarted one
    counts since its last start)."""
    lines = []
    async with aiohttp.ClientSession() as session:
        for n, limiter in enumerate(gw.limiters):
            async with session.get(limiter.url + "/metrics") as answer:
                exposition = await answer.text()
            counts = [line.split("{", 1)[1] for line in exposition.splitlines()
                      if line.startswith("agentmeter_limiter_fail_open_total{")]
            lines.append(f"limiter {n} fail-open: {', '.join(counts) or 'none'}")
    return lines


async def upstream_endings(gw: Gateway) -> dict[str, tuple[float, bool]]:
    async with aiohttp.ClientSession() as session, \
            session.get(gw.upstream.url + STATS_PATH) as answer:
        stats = await answer.json()
    return {key: (float(v[0]), bool(v[1])) for key, v in stats["endings"].items()}


def save_results(path: Path, results: list[Result]) -> None:
    """Every client result, one JSON line each, for a look after the run."""
    with path.open("w", encoding="utf-8") as out:
        for r in results:
            out.write(json.dumps(dataclasses.asdict(r)) + "\n")


async def run_soak(plan: SoakPlan, workdir: Path, *, log: bool = False) -> SoakReport:
    """Runs the whole scenario in `workdir` and returns what it proved."""
    def say(message: str) -> None:
        if log:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    workdir.mkdir(parents=True, exist_ok=True)
    with own_cluster() as cluster:
        ledger_url, callers = await asyncio.to_thread(prepare_ledger, cluster.url, plan.users,
                                                      plan.tight_users)
        async with gateway(workdir, ledger_url, plan.upstream_timeout) as gw, \
                monitoring(workdir / "monitoring", gw, scale=plan.alert_scale) as stack, \
                LoadGenerator([s.url for s in gw.limiters], callers) as load:
            say("stack up; warming every key on both limiters")
            await load.warm()
            timeline = Timeline(plan, gw, cluster, load)
            say(f"load: {plan.rate:.0f} req/s for {plan.duration:.0f} s")
            sampler = asyncio.create_task(timeline.sample_rss())
            await asyncio.gather(load.run(plan.rate, plan.duration), timeline.run())
            sampler.cancel()
            rss_end = rss_bytes(gw.limiters[0].pid)
            say("load done; waiting for the spools to drain")
            await wait_drained(gw, plan.drain_timeout)
            say("spools drained; waiting for the alerts to resolve")
            await wait_alerts_resolved(stack, plan.alert_timeout)
            fired, resolved = alert_states(stack)
            endings = await upstream_endings(gw)
            notes = await fail_open_counts(gw)
            notes.append("limiter 0 RSS every 10 s, MiB: " + " ".join(
                f"{sample / 2**20:.0f}" for sample in timeline.rss_samples))
        ledger, without_chat = await asyncio.to_thread(read_ledger, ledger_url)
    save_results(workdir / "results.jsonl", load.results)
    return SoakReport(
        rate=plan.rate, duration=plan.duration, outage=timeline.outage, results=load.results,
        ledger=ledger, unattributed_records=without_chat, full_cost=full_cost(),
        kills=timeline.kills, upstream_endings=endings, alerts_fired=fired,
        alerts_resolved=resolved, rss={"limiter 0": (timeline.rss_start, rss_end)},
        skipped=load.skipped, notes=notes)
