"""Issue 6 end to end: a user who reaches her limit and a model without pricing page someone.

Everything on the path is real: `agentmeter limiter` and `agentmeter exporter` run as commands on
a PostgreSQL ledger, an agent (the official `anthropic` SDK) talks to a fake provider through the
limiter until it is refused with 409, the operator re-applies the policy with `agentmeter apply`
adding a model without a price, Prometheus scrapes both processes as the jobs the rules assume
and evaluates time-scaled copies of the rules, and Alertmanager, configured like the example,
delivers the notifications to a webhook served by the test.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
import yaml

from ledger.engine import create_sync_engine
from ledger.keys import create_key
from ledger.periods import Period, period_bounds
from ledger.policy_apply import apply_policy
from ledger.policy_file import load_policy
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.monitoring_stack import (
    ManagedProcess,
    MonitoringStack,
    ScrapeJob,
    free_port,
    monitoring_stack,
    running,
    stop_together,
)

pytestmark = [pytest.mark.postgres, pytest.mark.prometheus, pytest.mark.slow]

# 15m `for` of AgentmeterModelsWithoutPricing -> 5s, 1m of AgentmeterUserSpendLimitReached -> 333ms.
SCALE = 180
ALERT_DEADLINE_SECONDS = 90
SCRAPE_DEADLINE_SECONDS = 20
RECORDING_DEADLINE_SECONDS = 10
ENV_PREFIX = "AGENTMETER_"

PRICED_MODEL = "claude-e2e"
UNPRICED_MODEL = "local-llm"
LIMIT_MICROS = 10_000  # limit_usd: 0.01
# Each answer costs 1000 x 3 + 200 x 15 = 6000 micros: the second one takes alice past 0.01 USD.
ANSWER_USAGE = TokenUsage(input=1000, output=200)
ANSWER_MICROS = 6_000
MAX_REQUESTS = 5


def _policy(*, with_unpriced_model: bool) -> dict[str, Any]:
    models: list[dict[str, Any]] = [{
        "name": PRICED_MODEL, "provider": "anthropic", "enabled": True,
        # Every kind priced: the only model without pricing is the one added later.
        "pricing": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75,
                    "cache_write_1h": 6},
    }]
    if with_unpriced_model:
        models.append({"name": UNPRICED_MODEL, "provider": "openai", "enabled": True,
                       "pricing": "none"})
    return {
        "limits": {"enabled": True, "period": "month"},
        "users": [{"username": "alice", "name": "Alice Liddell", "limit_usd": 0.01}],
        "models": models,
    }


def _write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def alice_key(pg_url: str, tmp_path: Path) -> str:
    """The ledger as an operator sets it up: the policy applied, a key issued to alice."""
    policy = _write_yaml(tmp_path / "policy.yaml", _policy(with_unpriced_model=False))
    engine = create_sync_engine(DatabaseSettings(url=pg_url))
    try:
        with engine.begin() as conn:
            apply_policy(conn, load_policy(policy))
            return create_key(conn, "alice").secret
    finally:
        engine.dispose()


@pytest.fixture
async def provider() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream(Answer(text="Here is the patch.", usage=ANSWER_USAGE))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@dataclass(frozen=True)
class Agentmeter:
    config: Path
    limiter: str
    exporter: str
    limiter_process: ManagedProcess
    exporter_process: ManagedProcess

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "agentmeter", *args, "--config", str(self.config)]


def _clean_environment() -> dict[str, str]:
    """The test's environment without AGENTMETER_* variables, which would override the file."""
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


@pytest.fixture
async def agentmeter(pg_url: str, alice_key: str, provider: FakeUpstream,
                     tmp_path: Path) -> AsyncIterator[Agentmeter]:
    """`agentmeter limiter` and `agentmeter exporter` as processes, both answering /healthz."""
    providers = {name: {"base_url": provider.base_url, "api_key": f"sk-{name}-e2e"}
                 for name in ("anthropic", "openai")}
    config = _write_yaml(tmp_path / "agentmeter.yaml", {
        "database": {"url": pg_url},
        "limiter": {"spool_dir": str(tmp_path / "spool"), "upstream_timeout_seconds": 10,
                    "providers": providers},
    })
    limiter_port, exporter_port = free_port(), free_port()
    base = [sys.executable, "-m", "agentmeter"]
    env = _clean_environment()
    async with (
        running("agentmeter limiter",
                [*base, "limiter", "--listen", f"127.0.0.1:{limiter_port}",
                 "--config", str(config)],
                tmp_path / "limiter.log", env=env, cwd=tmp_path) as limiter,
        running("agentmeter exporter",
                [*base, "exporter", "--listen", f"127.0.0.1:{exporter_port}",
                 "--config", str(config)],
                tmp_path / "exporter.log", env=env, cwd=tmp_path) as exporter,
    ):
        limiter_url = f"http://127.0.0.1:{limiter_port}"
        exporter_url = f"http://127.0.0.1:{exporter_port}"
        try:
            await asyncio.gather(limiter.wait_ready(f"{limiter_url}/healthz"),
                                 exporter.wait_ready(f"{exporter_url}/healthz"))
            yield Agentmeter(config, limiter_url, exporter_url, limiter, exporter)
        finally:
            await stop_together(limiter, exporter)


@pytest.fixture
async def stack(agentmeter: Agentmeter, tmp_path: Path) -> AsyncIterator[MonitoringStack]:
    jobs = [ScrapeJob("agentmeter-limiter", agentmeter.limiter.removeprefix("http://")),
            ScrapeJob("agentmeter-exporter", agentmeter.exporter.removeprefix("http://"))]
    async with monitoring_stack(tmp_path / "monitoring", jobs, scale=SCALE) as started:
        yield started


async def _spend_settles_at(agentmeter: Agentmeter, key: str, micros: int) -> dict[str, Any]:
    """alice's own status once the limiter has recorded what she has been answered so far.

    Usage is written after the answer is sent; waiting for it keeps the count of answers
    before the 409 exact.
    """
    headers = {"Authorization": f"Bearer {key}"}
    status: dict[str, Any] = {}
    deadline = time.monotonic() + RECORDING_DEADLINE_SECONDS
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            async with session.get(f"{agentmeter.limiter}/api/v1/usage/status",
                                   headers=headers) as answer:
                assert answer.status == 200, await answer.text()
                status = await answer.json()
            if status["current_spend_micros"] >= micros:
                return status
            await asyncio.sleep(0.05)
    pytest.fail(f"alice's spend did not reach {micros} micros in {RECORDING_DEADLINE_SECONDS}s: "
                f"{status}\n"
                f"{agentmeter.limiter_process.log_tail()}")


async def _drive_to_the_limit(agentmeter: Agentmeter, key: str
                              ) -> tuple[int, anthropic.ConflictError]:
    """Requests as an agent makes them until one is refused; the answers before it and the 409."""
    async with anthropic.AsyncAnthropic(base_url=agentmeter.limiter, api_key=key,
                                        max_retries=0) as client:
        for answered in range(MAX_REQUESTS):
            try:
                message = await client.messages.create(
                    model=PRICED_MODEL, max_tokens=256,
                    messages=[{"role": "user", "content": "Fix the failing test."}])
            except anthropic.ConflictError as refused:
                return answered, refused
            assert message.usage.input_tokens == ANSWER_USAGE.input
            await _spend_settles_at(agentmeter, key, (answered + 1) * ANSWER_MICROS)
    pytest.fail(f"no 409 after {MAX_REQUESTS} requests at {ANSWER_MICROS} micros each")


async def _apply(agentmeter: Agentmeter, policy: Path) -> str:
    """`agentmeter apply -f`, as the operator runs it."""
    process = await asyncio.create_subprocess_exec(
        *agentmeter.command("apply", "-f", str(policy)), env=_clean_environment(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_limit_reached_and_unpriced_model_reach_alertmanager(
        agentmeter: Agentmeter, stack: MonitoringStack, alice_key: str, tmp_path: Path) -> None:
    exporter, limiter = 'job="agentmeter-exporter"', 'job="agentmeter-limiter"'
    # Before anything happens every model has a price: the pricing alert starts quiet.
    await stack.wait_for_value(f"agentmeter_models_without_pricing{{{exporter}}}",
                               lambda v: v == 0, timeout=SCRAPE_DEADLINE_SECONDS)

    answered, refused = await _drive_to_the_limit(agentmeter, alice_key)
    now = datetime.now(UTC)
    period_end = period_bounds(Period.MONTH, now)[1]
    assert answered == 2
    assert refused.status_code == 409
    sentence = ("Chat usage limit exceeded: $0.012 of $0.01 this month; resets "
                f"{period_end:%Y-%m-%d} 00:00 UTC.")
    assert refused.body == {
        "message": sentence,
        "spent_micros": 2 * ANSWER_MICROS,
        "limit_micros": LIMIT_MICROS,
        "limit_source": "user",
        "resets_at": period_end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "type": "error",
        "error": {"type": "invalid_request_error", "message": sentence, "code": "limit_exceeded"},
    }
    headers = refused.response.headers
    assert headers["x-should-retry"] == "false"
    assert "Retry-After" not in headers

    # The operator enables a model and forgets its prices.
    policy = _write_yaml(tmp_path / "policy-v2.yaml", _policy(with_unpriced_model=True))
    assert UNPRICED_MODEL in await _apply(agentmeter, policy)

    deadline = time.monotonic() + ALERT_DEADLINE_SECONDS
    reached = await stack.wait_for_alert("spend", "AgentmeterUserSpendLimitReached",
                                         timeout=deadline - time.monotonic(), user="alice")
    assert reached["labels"] == {"alertname": "AgentmeterUserSpendLimitReached",
                                 "severity": "info", "user": "alice"}
    assert reached["annotations"]["description"] == (
        "alice has spent $0.01 in the current period, reaching their $0.01 limit "
        "(source: user). Their requests are refused (409 unless "
        "limiter.limit_exceeded_status says otherwise) until the period resets at "
        f"{period_end:%Y-%m-%d %H:%M:%S} +0000 UTC."
    )

    pricing = await stack.wait_for_alert("team-chat", "AgentmeterModelsWithoutPricing",
                                         timeout=deadline - time.monotonic())
    assert pricing["labels"] == {"alertname": "AgentmeterModelsWithoutPricing",
                                 "severity": "warning"}
    assert pricing["annotations"]["description"].startswith(
        f"Models without pricing: 1 ({UNPRICED_MODEL}).")

    # The refusal is on the limiter's own /metrics, as Prometheus scraped it.
    blocked = await stack.wait_for_value(
        f'agentmeter_limiter_blocked_total{{{limiter},user="alice"}}', lambda v: v >= 1,
        timeout=SCRAPE_DEADLINE_SECONDS)
    assert blocked == 1
