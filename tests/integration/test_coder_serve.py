"""`agentmeter serve` with `coder.url` set, as an operator runs it: one real process in front of
the fake Coder API and the fake provider, a real PostgreSQL ledger, everything over HTTP."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from ledger import metric_names as m
from tests.support.cli_process import agentmeter
from tests.support.fake_coder import FakeCoder, mint_token
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import anthropic_request, bearer, openai_request, policy, query
from tests.support.monitoring_stack import free_port, running

REPO = Path(__file__).resolve().parents[2]
ML_LIMIT_USD = 200
SPEND = ("SELECT u.username, u.coder_id, md.name, m.cost_micros FROM messages m "
         "JOIN users u ON u.id = m.user_id JOIN models md ON md.id = m.model_id")


async def _metric(session: aiohttp.ClientSession, url: str, name: str) -> float | None:
    async with session.get(url) as answer:
        for line in (await answer.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


async def _eventually(check: Any, what: str, seconds: float = 30) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds:.0f}s")
        await asyncio.sleep(0.1)


def _ledger_user(url: str, username: str) -> list[tuple[Any, ...]]:
    rows = query(url, "SELECT u.name, u.email, u.coder_id, g.name, g.coder_id, gl.limit_micros "
                      "FROM users u LEFT JOIN group_members gm ON gm.user_id = u.id "
                      "LEFT JOIN groups g ON g.id = gm.group_id "
                      "LEFT JOIN group_limits gl ON gl.group_id = g.id "
                      "WHERE u.username = :username", username=username)
    return [tuple(row) for row in rows]


async def test_serve_takes_coder_tokens_as_keys_and_syncs_users_and_groups(
        pg_url: str, tmp_path: Path, upstream: FakeUpstream, coder: FakeCoder) -> None:
    admin = coder.add_user("admin", "Coder Admin")
    dana = coder.add_user("dana", "Dana Scully", "dana@example.com")
    ml = coder.add_group("ml", [dana])
    token = coder.token_for(dana)
    expired = coder.token_for(dana, lifetime_seconds=0)

    limiter_port, exporter_port = free_port(), free_port()
    config = tmp_path / "agentmeter.yaml"
    config.write_text(yaml.safe_dump({
        "database": {"url": pg_url},
        "limiter": {"listen": f"127.0.0.1:{limiter_port}", "spool_dir": str(tmp_path / "spool"),
                    "providers": {name: {"base_url": upstream.base_url, "api_key": f"sk-{name}"}
                                  for name in ("openai", "anthropic")}},
        "exporter": {"listen": f"127.0.0.1:{exporter_port}"},
        "coder": {"url": coder.base_url, "token": coder.token_for(admin), "sync_seconds": 60},
    }))
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(
        policy(groups=[{"name": "ml", "limit_usd": ML_LIMIT_USD}])))
    await agentmeter({}, "apply", "--config", str(config), "-f", str(policy_file))

    gateway, metrics = f"http://127.0.0.1:{limiter_port}", f"http://127.0.0.1:{exporter_port}"
    async with running("agentmeter serve",
                       [sys.executable, "-m", "agentmeter", "serve", "--config", str(config)],
                       tmp_path / "serve.log", env={"PATH": "/usr/bin:/bin",
                                                    "HOME": str(tmp_path)},
                       cwd=REPO) as process, aiohttp.ClientSession() as session:
        await process.wait_ready(f"{gateway}/healthz")
        await process.wait_ready(f"{metrics}/metrics")
        # The sync ran in the process before anyone used a token: dana is in the ledger, in
        # the policy's group ml (adopted by name, members from Coder), under its limit.
        await _eventually(lambda: _metric(session, f"{metrics}/metrics", m.CODER_SYNC_SUCCESS),
                          "a Coder sync in the serve process")
        assert _ledger_user(pg_url, "dana") == [
            ("Dana Scully", "dana@example.com", dana.id, "ml", ml.id, ML_LIMIT_USD * 1_000_000)]
        assert coder.calls.get("me", 0) == 0

        async with session.get(f"{gateway}/api/v1/usage/status",
                               headers={"Coder-Session-Token": token}) as answer:
            status = await answer.json()
        async with session.post(f"{gateway}/v1/chat/completions", json=openai_request(),
                                headers=bearer(token)) as answer:
            accepted = answer.status, await answer.json()
        async with session.post(f"{gateway}/v1/messages", json=anthropic_request(),
                                headers={"x-api-key": expired}) as answer:
            expired_answer = answer.status, await answer.json()
        async with session.post(f"{gateway}/v1/chat/completions", json=openai_request(),
                                headers=bearer(mint_token())) as answer:
            unknown_answer = answer.status, await answer.json()

        assert (status["username"], status["limit_source"], status["limit_micros"]) == (
            "dana", "group", ML_LIMIT_USD * 1_000_000)
        assert accepted[0] == 200, accepted[1]
        assert accepted[1]["usage"]["completion_tokens"] == 9
        # Refusals in the dialect of the route they came to.
        assert expired_answer[0] == 401
        assert expired_answer[1]["type"] == "error"
        assert (expired_answer[1]["error"]["type"],
                expired_answer[1]["error"]["code"]) == ("authentication_error",
                                                        "invalid_coder_token")
        assert unknown_answer[0] == 401
        assert (unknown_answer[1]["error"]["type"],
                unknown_answer[1]["error"]["code"]) == ("authentication_error",
                                                        "invalid_coder_token")

        rows = await _eventually(lambda: query(pg_url, SPEND), "dana's message in the ledger")
    assert [tuple(row) for row in rows] == [("dana", dana.id, "gpt-test", 12 * 1 + 9 * 2)]
    assert len(upstream.received) == 1
    assert all(token not in value for value in upstream.received[0].headers.values())
