"""The secrets grep: after a full run, no provider key and no user key appears in any output.

Everything runs as an operator runs it: `agentmeter apply` and `agentmeter keys create|list|
revoke` as commands, `agentmeter limiter` and `agentmeter exporter` as processes (debug logging,
the provider keys in their config file) in front of a fake provider. The run goes through the
happy paths (both providers, streamed and not) and the unhappy ones (unknown, revoked and
spoofed credentials, bad JSON, an oversized body, a 409, a provider 500, an unreachable
provider, admin calls). Then every output is collected — each process's stdout and stderr, both
/metrics pages, every response's headers and body, the spool, every row of every ledger table —
and searched for each secret. Only the key's hash may be stored, and `keys create` may print the
key once (that is its purpose); nothing else may hold a secret.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from ledger.keys import hash_key
from ledger.tokens import TokenUsage
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.gateway import anthropic_request, openai_request, policy
from tests.support.hostile import ledger_dump
from tests.support.monitoring_stack import free_port, running, stop_together

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RECORD_DEADLINE_SECONDS = 15.0


@dataclass
class Outputs:
    """Everything the run produced, by where it came from."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.texts[f"{where} #{len(self.texts)}"] = text

    def holding(self, secret: str) -> list[str]:
        return [where for where, text in self.texts.items() if secret in text]


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(outputs: Outputs, env: dict[str, str], *args: str, ok: bool = True,
        record_stdout: bool = True) -> str:
    result = subprocess.run([sys.executable, "-m", "agentmeter", *args], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=60)
    outputs.add(f"agentmeter {' '.join(args)} stderr", result.stderr)
    if record_stdout:
        outputs.add(f"agentmeter {' '.join(args)} stdout", result.stdout)
    assert (result.returncode == 0) == ok, result.stderr
    return result.stdout


@pytest.fixture
async def provider() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream(Answer(usage=TokenUsage(input=40, output=12)))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


async def exchange(session: aiohttp.ClientSession, outputs: Outputs, method: str, url: str,
                   **kwargs: Any) -> int:
    async with session.request(method, url, **kwargs) as answer:
        body = await answer.read()
        outputs.add(f"{method} {url} -> {answer.status} headers",
                    "\n".join(f"{k}: {v}" for k, v in answer.headers.items()))
        outputs.add(f"{method} {url} -> {answer.status} body", body)
        return answer.status


async def wait_for_messages(url: str, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + RECORD_DEADLINE_SECONDS
    while len(ledger_dump(url)["messages"]) < count:
        assert asyncio.get_running_loop().time() < deadline, "usage was not recorded"
        await asyncio.sleep(0.1)


async def test_no_secret_appears_in_any_output(sqlite_url: str, tmp_path: Path,
                                               provider: FakeUpstream) -> None:
    outputs = Outputs()
    openai_key = f"sk-proj-LEAKCHECK{secrets.token_hex(16)}"
    anthropic_key = f"sk-ant-api03-LEAKCHECK{secrets.token_hex(16)}"
    admin_token = f"adm-LEAKCHECK{secrets.token_hex(12)}"
    shared_secret = f"hdr-LEAKCHECK{secrets.token_hex(12)}"
    guessed_key = f"am-LEAKCHECK{secrets.token_hex(16)}"

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AGENTMETER_LOG_LEVEL": "debug"}
    config = tmp_path / "agentmeter.yaml"
    config.write_text(yaml.safe_dump({
        "database": {"url": sqlite_url},
        "log_level": "debug",
        "limiter": {
            "spool_dir": str(tmp_path / "spool"), "upstream_timeout_seconds": 5,
            "admin_token": admin_token, "trusted_header_secret": shared_secret,
            "providers": {
                "openai": {"base_url": provider.base_url, "api_key": openai_key},
                # An unreachable provider: its calls fail with 502, its key must not leak.
                "anthropic": {"base_url": f"http://127.0.0.1:{dead_port()}",
                              "api_key": anthropic_key},
            },
        },
    }))
    with_config = ["--config", str(config)]
    document = policy(users=[{"username": "alice", "name": "Alice"},
                             {"username": "bob", "name": "Bob", "limit_usd": 0.00005}])
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(document))

    # -- the operator's commands --
    cli(outputs, env, "apply", "-f", str(policy_file), "--dry-run", *with_config)
    cli(outputs, env, "apply", "-f", str(policy_file), *with_config)
    user_keys: dict[str, str] = {}
    for user in ("alice", "bob", "alice"):
        printed = cli(outputs, env, "keys", "create", user, *with_config, record_stdout=False)
        # Printed once, alone on the last line: that is the one place a key may appear.
        user_keys[f"{user}-{len(user_keys)}"] = printed.strip().splitlines()[-1]
    alice, bob, alice_revoked = (user_keys["alice-0"], user_keys["bob-1"],
                                 user_keys["alice-2"])
    cli(outputs, env, "keys", "list", *with_config)
    key_ids = [line.split()[0] for line in cli(outputs, env, "keys", "list", "alice",
                                               *with_config).splitlines()
               if line.startswith("key_")]
    assert len(key_ids) == 2
    # Revoke alice's second key by its id (her first one stays valid).
    second = next(row[0] for row in ledger_dump(sqlite_url)["api_keys"]
                  if row[2] == hash_key(alice_revoked))
    assert second in key_ids
    cli(outputs, env, "keys", "revoke", "alice", "--key-id", str(second), *with_config)

    # -- the limiter and the exporter as processes --
    limiter_port, exporter_port = free_port(), free_port()
    limiter_url, exporter_url = (f"http://127.0.0.1:{limiter_port}",
                                 f"http://127.0.0.1:{exporter_port}")
    base = [sys.executable, "-m", "agentmeter"]
    async with (
        running("agentmeter limiter", [*base, "limiter", "--listen",
                                       f"127.0.0.1:{limiter_port}", *with_config],
                tmp_path / "limiter.log", env=env, cwd=REPO) as limiter,
        running("agentmeter exporter", [*base, "exporter", "--listen",
                                        f"127.0.0.1:{exporter_port}", *with_config],
                tmp_path / "exporter.log", env=env, cwd=REPO) as exporter,
    ):
        await asyncio.gather(limiter.wait_ready(f"{limiter_url}/healthz"),
                             exporter.wait_ready(f"{exporter_url}/healthz"))
        chat, messages = f"{limiter_url}/v1/chat/completions", f"{limiter_url}/v1/messages"
        as_alice = {"Authorization": f"Bearer {alice}", "X-Chat-ID": "leak-check"}
        admin = {"Authorization": f"Bearer {admin_token}"}
        async with aiohttp.ClientSession() as session:
            expected: dict[str, int] = {}

            async def call(name: str, status: int, method: str, url: str, **kw: Any) -> None:
                got = await exchange(session, outputs, method, url, **kw)
                assert got == status, (name, got)
                expected[name] = got

            await call("openai", 200, "POST", chat, json=openai_request(), headers=as_alice)
            await call("openai stream", 200, "POST", chat,
                       json=openai_request(stream=True), headers=as_alice)
            await call("x-api-key", 200, "POST", chat, json=openai_request(),
                       headers={"x-api-key": alice})
            await call("trusted", 200, "POST", chat, json=openai_request(),
                       headers={"X-Forwarded-User": "alice",
                                "X-Agentmeter-Secret": shared_secret})
            await wait_for_messages(sqlite_url, 4)
            provider.queue(Answer(status=500))
            await call("provider 500", 500, "POST", chat, json=openai_request(),
                       headers=as_alice)
            await call("unreachable provider", 502, "POST", messages,
                       json=anthropic_request(), headers={"x-api-key": alice})
            await call("unreachable stream", 502, "POST", messages,
                       json=anthropic_request(stream=True), headers=as_alice)
            await call("bob answered", 200, "POST", chat, json=openai_request(),
                       headers={"Authorization": f"Bearer {bob}"})
            await wait_for_messages(sqlite_url, 5)
            await call("bob over his limit", 409, "POST", chat, json=openai_request(),
                       headers={"Authorization": f"Bearer {bob}"})
            await call("revoked key", 401, "POST", chat, json=openai_request(),
                       headers={"Authorization": f"Bearer {alice_revoked}"})
            await call("guessed key", 401, "POST", messages, json=anthropic_request(),
                       headers={"x-api-key": guessed_key})
            await call("spoofed user", 401, "POST", chat, json=openai_request(),
                       headers={"X-Forwarded-User": "alice",
                                "X-Agentmeter-Secret": shared_secret[:-1]})
            await call("bad json", 400, "POST", chat, data=b"{oops", headers=as_alice)
            await call("undeclared model", 400, "POST", chat,
                       json=openai_request("gpt-nope"), headers=as_alice)
            await call("too large", 413, "POST", chat, data=io.BytesIO(b" " * (33 * 1024 * 1024)),
                       headers=as_alice)
            await call("status", 200, "GET", f"{limiter_url}/api/v1/usage/status",
                       headers=as_alice)
            await call("revoked status", 401, "GET", f"{limiter_url}/api/v1/usage/status",
                       headers={"x-api-key": alice_revoked})
            await call("models", 200, "GET", f"{limiter_url}/v1/models", headers=as_alice)
            await call("user on admin", 403, "GET", f"{limiter_url}/api/v1/limits",
                       headers=as_alice)
            await call("admin limits", 200, "GET", f"{limiter_url}/api/v1/limits",
                       headers=admin)
            await call("admin put", 200, "PUT", f"{limiter_url}/api/v1/limits/users/alice",
                       json={"limit_usd": "100"}, headers=admin)
            await call("admin bad body", 400, "PUT", f"{limiter_url}/api/v1/limits",
                       data=b'{"period": "year"}', headers=admin)
            await call("admin table", 200, "GET", f"{limiter_url}/api/v1/usage/users",
                       headers=admin)
            await call("admin detail", 200, "GET",
                       f"{limiter_url}/api/v1/usage/users/alice", headers=admin)
            await call("openapi", 200, "GET", f"{limiter_url}/openapi.json")
            await call("readyz", 200, "GET", f"{limiter_url}/readyz")
            for url in (f"{limiter_url}/metrics", f"{exporter_url}/metrics"):
                await call(f"metrics {url}", 200, "GET", url)
        await stop_together(limiter, exporter)
        outputs.add("limiter stdout+stderr", limiter.log_path.read_bytes())
        outputs.add("exporter stdout+stderr", exporter.log_path.read_bytes())

    # The run did what it claims: answers recorded, the 409 and the failures happened.
    assert len(provider.received) >= 6
    assert any(r.headers.get("Authorization") == f"Bearer {openai_key}"
               for r in provider.received)  # the provider key did reach the provider
    dump = ledger_dump(sqlite_url)
    outputs.add("ledger", repr(dump))
    for file in (tmp_path / "spool").rglob("*"):
        if file.is_file():
            outputs.add(f"spool {file.name}", file.read_bytes())
    stored_hashes = {row[2] for row in dump["api_keys"]}
    assert stored_hashes == {hash_key(k) for k in (alice, bob, alice_revoked)}
    assert any(hash_key(alice) in text for text in outputs.texts.values())  # hashes may appear

    leaks = {name: outputs.holding(secret) for name, secret in {
        "OpenAI key": openai_key, "Anthropic key": anthropic_key, "admin token": admin_token,
        "trusted-header secret": shared_secret, "alice's key": alice, "bob's key": bob,
        "alice's revoked key": alice_revoked, "a guessed key": guessed_key,
    }.items()}
    assert {name: where for name, where in leaks.items() if where} == {}
    assert len(outputs.texts) > 60  # the grep saw every output, not a handful
