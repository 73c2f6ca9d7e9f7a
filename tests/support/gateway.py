"""Helpers for the limiter gateway tests: a ledger seeded from a policy, keys, a movable clock.

The ledger is real (SQLite file or PostgreSQL database from the conftest fixtures) and is read
back with plain SQL, so tests assert what an operator would see in it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import text

from ledger.engine import create_sync_engine, libpq_url
from ledger.keys import create_key
from ledger.metric_names import PREFIX
from ledger.policy_apply import apply_policy
from ledger.policy_file import parse_policy
from ledger.settings import DatabaseSettings
from limiter.http.app import create_app
from limiter.http.app_keys import LISTENER, RECORDER
from limiter.http.server import gateway_runner
from limiter.settings import LimiterSettings, UpstreamSettings

# Prices chosen so costs are easy to read: gpt-test costs 1 micro per input token and 2 per
# output token; claude-test 3 and 15 (USD per 1M tokens == micros per token).
BASE_POLICY: dict[str, Any] = {
    "limits": {"enabled": True, "period": "month"},
    "users": [
        {"username": "alice", "name": "Alice Liddell", "email": "alice@example.com"},
        {"username": "bob", "name": "Bob Builder"},
    ],
    "models": [
        {"name": "gpt-test", "provider": "openai", "aliases": ["gpt-test-latest"],
         "max_output_tokens": 1000, "pricing": {"input": 1, "output": 2, "cache_read": 0.5}},
        {"name": "claude-test", "provider": "anthropic", "aliases": ["claude-test-2025"],
         "max_output_tokens": 2000,
         "pricing": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}},
        {"name": "free-model", "provider": "openai", "pricing": "none"},
        {"name": "retired-model", "provider": "openai", "enabled": False,
         "pricing": {"input": 1, "output": 1}},
    ],
}


def policy(**changes: Any) -> dict[str, Any]:
    """The base policy with top-level sections replaced or merged (`limits` is merged)."""
    result = {key: (value.copy() if isinstance(value, dict) else list(value))
              for key, value in BASE_POLICY.items()}
    for key, value in changes.items():
        if key == "limits":
            result["limits"] = {**BASE_POLICY["limits"], **value}
        else:
            result[key] = value
    return result


def seed_ledger(url: str, document: dict[str, Any] | None = None,
                keys_for: tuple[str, ...] = ("alice", "bob")) -> dict[str, str]:
    """Apply the policy and create one key per user; returns username -> secret."""
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            apply_policy(conn, parse_policy(yaml.safe_dump(document or BASE_POLICY)))
            return {user: create_key(conn, user).secret for user in keys_for}
    finally:
        engine.dispose()


def apply(url: str, document: dict[str, Any]) -> None:
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            apply_policy(conn, parse_policy(yaml.safe_dump(document)))
    finally:
        engine.dispose()


def query(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


@contextlib.contextmanager
def keys_locked(url: str) -> Iterator[None]:
    """A PostgreSQL ledger whose key table an administrator's open transaction holds: the key
    check waits on it until the block ends."""
    with psycopg.connect(libpq_url(url)) as admin:
        admin.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        yield
        admin.rollback()


def message_count(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM messages")[0][0])


def ledger_snapshot(url: str) -> tuple[int, int, int]:
    """(messages, summed cost, reservations): what "the ledger unchanged" compares."""
    messages = query(url, "SELECT count(*), coalesce(sum(cost_micros), 0) FROM messages")[0]
    reservations = query(url, "SELECT count(*) FROM reservations")[0][0]
    return int(messages[0]), int(messages[1]), int(reservations)


# The gateway's own Gemini API key, as the fake provider sees it.
GOOGLE_KEY = "AIza-gateway-SECRET"


def limiter_settings(tmp_path: Path, upstream_url: str, *, google: bool = False,
                     **changes: Any) -> LimiterSettings:
    """Gateway settings with `upstream_url` as the OpenAI and Anthropic upstream (and, with
    `google`, the Gemini one)."""
    providers = {"openai": UpstreamSettings(base_url=upstream_url, api_key="sk-openai-SECRET"),
                 "anthropic": UpstreamSettings(base_url=upstream_url,
                                               api_key="sk-ant-SECRET")}
    if google:
        providers["google"] = UpstreamSettings(base_url=upstream_url, api_key=GOOGLE_KEY)
    base = LimiterSettings(spool_dir=str(tmp_path / "spool"), admin_token="admin-token-xyz",
                           upstream_timeout_seconds=5.0, providers=providers)
    return dataclasses.replace(base, **changes)


class MovableClock:
    """An injectable clock (aware UTC) that tests move forward to roll the period."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 14, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def set(self, moment: datetime) -> None:
        self.now = moment


def openai_request(model: str = "gpt-test", stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream,
            **extra}


def anthropic_request(model: str = "claude-test", stream: bool = False,
                      **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}], **extra}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def gateway_app(url: str, settings: LimiterSettings, *, clock: MovableClock | None = None,
                registry: Any = None, pool_size: int = DatabaseSettings.pool_size,
                **kwargs: Any) -> web.Application:
    database = DatabaseSettings(url=url, connect_timeout_seconds=2.0, pool_size=pool_size)
    return create_app(settings, database, registry=registry, clock=clock, **kwargs)


class GatewayTestServer(TestServer):
    """Serves a limiter app as `agentmeter limiter` does (`limiter.http.server`)."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs.pop("handler_cancellation", None)  # TestServer's own choice, not the CLI's
        return gateway_runner(self.app, **kwargs)


async def settled(app: web.Application) -> None:
    """Wait until every answered request's usage is in the ledger (or the spool), and the
    app's cached key checks have heard of it."""
    await app[RECORDER].idle()
    await heard(app)


async def heard(app: web.Application) -> None:
    """Wait until the app has applied every ledger change committed so far (what another
    process recorded or changed reaches its cached key checks as a notification)."""
    listener = app[LISTENER]
    if listener is not None:
        await listener.caught_up()


def metric(registry: Any, name: str, **labels: str) -> float:
    assert name.startswith(PREFIX)
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)
