"""The dashboards against the real thing: every panel query answers from live processes.

`agentmeter limiter` and `agentmeter exporter` run as commands on a seeded PostgreSQL ledger,
the exporter watching a local Kubernetes API; agents' traffic flows through the limiter to a fake
provider (some of it refused with 409); a real Prometheus scrapes both processes plus the sample
coderd/cAdvisor/node-exporter target. Every PromQL query of every dashboard, its variables
filled in, must run without error and return numbers; the per-chat SQL must find the chats.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from ledger.engine import create_sync_engine
from ledger.keys import create_key
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from tests.support import fake_kube_api as kube
from tests.support.dashboard_queries import (
    ScrapeJob,
    all_queries,
    expand_sql,
    free_port,
    prometheus_server,
    substitute,
)
from tests.support.external_metrics_target import (
    WorkspacePod,
    external_registries,
    serve_metrics,
)
from tests.support.ledger_seed import record, seed_policy

pytestmark = [pytest.mark.postgres, pytest.mark.prometheus, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RANGE_SECONDS = 10
VARIABLES = {"user": "alice", "__rate_interval": "4s", "__range": f"{RANGE_SECONDS}s"}
REQUESTS = {"cpu": "1", "memory": "2Gi"}
LIMITS = {"cpu": "2", "memory": "4Gi"}


def _seed(url: str) -> dict[str, str]:
    """The shared seed policy, usage now (chats, an unpriced model, bob near and carol at their
    20 USD group limit), and keys; returns username -> key."""
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        seed_policy(engine)
        now = datetime.now(UTC)
        record(engine, "alice", "claude-sonnet-4-5", TokenUsage(input=1000, output=400,
                                                                 cache_read=5000), now, "chat-1")
        record(engine, "alice", "gpt-5", TokenUsage(input=300, output=200), now, "chat-2",
               provider="openai")
        record(engine, "alice", "mystery-model", TokenUsage(input=50, output=50), now,
               provider="openai")
        record(engine, "bob", "claude-sonnet-4-5", TokenUsage(input=5_666_667), now)  # 17 USD
        record(engine, "carol", "claude-sonnet-4-5", TokenUsage(input=8_333_334), now)  # 25 USD
        with engine.begin() as conn:
            return {user: create_key(conn, user).secret for user in ("alice", "carol")}
    finally:
        engine.dispose()


def _cluster(api: kube.FakeKubeApi) -> list[WorkspacePod]:
    api.put_many(
        nodes=[kube.node("node-a", cpu="4", memory="16Gi"),
               kube.node("node-b", cpu="4", memory="16Gi")],
        pods=[kube.workspace_pod("alice", "main", node="node-a",
                                 containers=[kube.container(requests=REQUESTS, limits=LIMITS)]),
              kube.workspace_pod("bob", "idle", node="node-b",
                                 containers=[kube.container(requests=REQUESTS, limits=LIMITS)])])
    api.pod_metrics = {("coder", "coder-alice-main"): {"dev": ("1500m", "2Gi")},
                       ("coder", "coder-bob-idle"): {"dev": ("10m", "200Mi")}}
    api.node_metrics = {"node-a": ("3500m", "12Gi"), "node-b": ("200m", "1Gi")}
    return [WorkspacePod("coder", "coder-alice-main"), WorkspacePod("coder", "coder-bob-idle")]


@contextmanager
def _process(args: list[str], log: Path,
             ready_url: str | None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=out,
                                   stderr=subprocess.STDOUT)
        try:
            if ready_url is not None:
                _wait_ready(process, ready_url, log)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url} exited early:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered:\n{log.read_text(errors='replace')}")


def _post(url: str, key: str, body: dict[str, Any], chat: str | None = None) -> int:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    if chat:
        headers["X-Chat-ID"] = chat
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class Traffic:
    """Agents at work: alice's requests through both providers, carol's refused with 409."""

    def __init__(self, limiter: str, keys: dict[str, str]) -> None:
        self.limiter, self.keys = limiter, keys
        self.codes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _once(self, n: int) -> None:
        anthropic = {"model": "claude-sonnet-4-5", "max_tokens": 50,
                     "messages": [{"role": "user", "content": "hi"}]}
        openai = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
        unpriced = {"model": "mystery-model", "messages": [{"role": "user", "content": "hi"}]}
        self.codes.append(_post(f"{self.limiter}/v1/messages", self.keys["alice"], anthropic,
                                chat=f"live-{n % 3}"))
        self.codes.append(_post(f"{self.limiter}/v1/chat/completions", self.keys["alice"],
                                openai))
        self.codes.append(_post(f"{self.limiter}/v1/chat/completions", self.keys["alice"],
                                unpriced))
        self.codes.append(_post(f"{self.limiter}/v1/messages", self.keys["carol"], anthropic))

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self._once(n)
            n += 1
            self._stop.wait(0.3)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _write_config(tmp_path: Path, url: str, upstream: str, kubeconfig: Path) -> Path:
    providers = {name: {"base_url": upstream, "api_key": f"sk-{name}-test"}
                 for name in ("openai", "anthropic")}
    config = {
        "database": {"url": url},
        "limiter": {"spool_dir": str(tmp_path / "spool"), "admin_token": "admin-e2e",
                    "upstream_timeout_seconds": 10, "providers": providers},
        "exporter": {"kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig),
                                    "metrics_poll_seconds": 1}},
        # Retention set: the exporter prunes at start-up (nothing is that old), so the Control
        # plane's retention panels have their last prune to show.
        "ledger": {"message_retention_days": 400},
    }
    path = tmp_path / "agentmeter.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _numbers(result: list[dict[str, Any]]) -> bool:
    values = [v for series in result
              for v in ([series["value"]] if "value" in series else series["values"])]
    return any(not math.isnan(float(value)) for _, value in values)


def test_every_panel_answers_from_the_running_limiter_and_exporter(
        pg_url: str, tmp_path: Path) -> None:
    keys = _seed(pg_url)
    limiter_port, exporter_port, upstream_port = free_port(), free_port(), free_port()
    limiter = f"http://127.0.0.1:{limiter_port}"
    exporter = f"http://127.0.0.1:{exporter_port}"
    with ExitStack() as stack:
        api = stack.enter_context(kube.fake_kube_api())
        pods = _cluster(api)
        config = _write_config(tmp_path, pg_url, f"http://127.0.0.1:{upstream_port}",
                               api.write_kubeconfig(tmp_path / "kubeconfig"))
        stack.enter_context(_process(
            ["-m", "tests.support.fake_upstream", "--port", str(upstream_port)],
            tmp_path / "upstream.log", None))
        stack.enter_context(_process(
            ["-m", "agentmeter", "limiter", "--config", str(config),
             "--listen", f"127.0.0.1:{limiter_port}"],
            tmp_path / "limiter.log", f"{limiter}/healthz"))
        stack.enter_context(_process(
            ["-m", "agentmeter", "exporter", "--config", str(config),
             "--listen", f"127.0.0.1:{exporter_port}"],
            tmp_path / "exporter.log", f"{exporter}/healthz"))
        target = stack.enter_context(serve_metrics(external_registries(pods)))
        traffic = stack.enter_context(Traffic(limiter, keys))
        jobs = [ScrapeJob("agentmeter-limiter", f"127.0.0.1:{limiter_port}"),
                ScrapeJob("agentmeter-exporter", f"127.0.0.1:{exporter_port}"),
                *(ScrapeJob(name, target.address, f"/{name}")
                  for name in ("coderd", "cadvisor", "node-exporter"))]
        prometheus = stack.enter_context(prometheus_server(jobs))
        prometheus.wait_for_series(
            f"count(count_over_time(up[1m]) >= {RANGE_SECONDS + 2}) == {len(jobs)}")

        up = prometheus.api("query", query="up")["data"]["result"]
        assert {r["metric"]["job"]: r["value"][1] for r in up} == {
            job.name: "1" for job in jobs}
        assert 200 in traffic.codes and 409 in traffic.codes, traffic.codes
        users = prometheus.api("label/user/values", **{
            "match[]": 'agentmeter_user_info{job="agentmeter-exporter"}'})["data"]
        assert {"alice", "bob", "carol"} <= set(users)  # the User detail `user` variable

        problems = []
        for query in all_queries():
            if query.datasource_type != "prometheus":
                continue
            expr = substitute(query.text, VARIABLES)
            answer = prometheus.query(expr, query.instant, RANGE_SECONDS)
            result = answer.get("data", {}).get("result")
            if answer.get("status") != "success" or not result or not _numbers(result):
                problems.append(f"{query.where}: {expr} -> {answer}")
        assert not problems, "panels without data:\n" + "\n".join(problems)

        # On PostgreSQL the limiter answers repeated checks of the same keys from its check
        # cache: the share panel must see it (a 0 would also be "data" above).
        share = next(q for q in all_queries()
                     if q.panel_title == "Checks answered from the cache")
        answer = prometheus.query(substitute(share.text, VARIABLES), share.instant,
                                  RANGE_SECONDS)
        assert float(answer["data"]["result"][0]["value"][1]) > 0.5, answer

    sql = next(q.text for q in all_queries() if q.panel_title == "Per chat")
    now = datetime.now(UTC)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(expand_sql(sql, now - timedelta(hours=1), now + timedelta(hours=1),
                                       {"user": "alice"})).fetchall()
    chats = {row[0] for row in rows}
    assert {"chat-1", "chat-2", "live-0"} <= chats
