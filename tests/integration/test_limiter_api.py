"""The admin API (admin token only) and its 401/403 answers, against a real ledger."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ledger.engine import create_sync_engine
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord, record_usage
from tests.support.gateway import (
    MovableClock,
    bearer,
    gateway_app,
    ledger_snapshot,
    limiter_settings,
    policy,
    seed_ledger,
)

ADMIN = bearer("admin-token-xyz")
NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)

ADMIN_ROUTES = [
    ("GET", "/api/v1/limits", None),
    ("PUT", "/api/v1/limits", {"enabled": True}),
    ("PUT", "/api/v1/limits/users/alice", {"limit_usd": "1"}),
    ("DELETE", "/api/v1/limits/users/alice", None),
    ("PUT", "/api/v1/limits/groups/ml", {"limit_micros": 5}),
    ("DELETE", "/api/v1/limits/groups/ml", None),
    ("GET", "/api/v1/usage/users", None),
    ("GET", "/api/v1/usage/users/alice", None),
]


def document() -> dict[str, Any]:
    return policy(
        users=[{"username": "alice", "name": "Alice Liddell"},
               {"username": "bob", "name": "Bob Builder"},
               {"username": "carol", "name": "Carol Alison"}],
        groups=[{"name": "ml", "members": ["alice", "bob"]}])


async def start(aiohttp_client: Any, url: str, tmp_path: Path, **changes: Any) -> Any:
    settings = limiter_settings(tmp_path, "http://127.0.0.1:9", **changes)
    return await aiohttp_client(gateway_app(url, settings, clock=MovableClock(NOW),
                                            registry=CollectorRegistry()))


def record(url: str, username: str, *, usage: TokenUsage, model: str = "gpt-test",
           chat: str | None = None, at: datetime = NOW) -> None:
    engine = create_sync_engine(DatabaseSettings(url=url))
    with engine.begin() as conn:
        user_id = conn.exec_driver_sql("SELECT id FROM users WHERE username = ?"
                                       if conn.dialect.name == "sqlite" else
                                       "SELECT id FROM users WHERE username = %s",
                                       (username,)).scalar()
        record_usage(conn, UsageRecord(id=str(uuid.uuid4()), user_id=int(user_id or 0), model=model,
                                       provider="openai", usage=usage, created_at=at, chat=chat))
    engine.dispose()


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES,
                         ids=[f"{m} {p}" for m, p, _ in ADMIN_ROUTES])
async def test_admin_routes_need_the_admin_token(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, method: str, path: str,
        body: Any) -> None:
    keys = seed_ledger(sqlite_url, document())
    client = await start(aiohttp_client, sqlite_url, tmp_path, trusted_header_secret="s3cret")
    before = ledger_snapshot(sqlite_url)
    cases = [
        ({}, 401),
        (bearer("not-a-key"), 401),
        ({"x-api-key": "admin-token-xy"}, 401),
        (bearer(keys["alice"]), 403),
        ({"x-api-key": keys["bob"]}, 403),
        ({"X-Forwarded-User": "alice", "X-Agentmeter-Secret": "s3cret"}, 403),
    ]
    for headers, status in cases:
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status == status, (headers, await resp.text())
        assert (await resp.json())["error"]["code"] in {"missing_api_key", "invalid_api_key",
                                                        "forbidden"}
    assert ledger_snapshot(sqlite_url) == before
    for headers in (ADMIN, {"x-api-key": "admin-token-xyz"}):
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status == 200, await resp.text()


async def test_no_admin_token_configured_means_no_admin(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path) -> None:
    seed_ledger(sqlite_url, document())
    client = await start(aiohttp_client, sqlite_url, tmp_path, admin_token=None)
    assert (await client.get("/api/v1/limits", headers=ADMIN)).status == 401


async def test_limits_config_read_and_update(aiohttp_client: Any, ledger_url: str,
                                             tmp_path: Path) -> None:
    seed_ledger(ledger_url, document())
    client = await start(aiohttp_client, ledger_url, tmp_path)
    resp = await client.get("/api/v1/limits", headers=ADMIN)
    assert await resp.json() == {
        "enabled": True, "period": "month", "default_limit_micros": None,
        "group_policy": "lowest", "models_without_pricing": 1,
        "unpriced_models": [{"model": "free-model", "reason": "no_pricing",
                             "missing": ["input", "output", "cache_read", "cache_write",
                                         "cache_write_1h"]}]}
    resp = await client.put("/api/v1/limits", headers=ADMIN, json={
        "period": "week", "default_limit_usd": "12.5", "group_policy": "highest"})
    body = await resp.json()
    assert (body["period"], body["default_limit_micros"], body["group_policy"],
            body["enabled"]) == ("week", 12_500_000, "highest", True)
    resp = await client.put("/api/v1/limits", headers=ADMIN,
                            json={"enabled": False, "default_limit_micros": None})
    body = await resp.json()
    assert (body["enabled"], body["default_limit_micros"], body["period"]) == (False, None,
                                                                              "week")


@pytest.mark.parametrize("body", [
    {"period": "year"}, {"group_policy": "median"}, {"enabled": "yes"},
    {"default_limit_micros": 0}, {"default_limit_micros": -5}, {"default_limit_micros": 1.5},
    {"default_limit_usd": "0.0000001"}, {"default_limit_usd": "abc"},
    {"default_limit_usd": "1", "default_limit_micros": 1}, {"colour": "blue"},
])
async def test_limits_update_rejects_bad_values(aiohttp_client: Any, sqlite_url: str,
                                                tmp_path: Path, body: dict[str, Any]) -> None:
    seed_ledger(sqlite_url, document())
    client = await start(aiohttp_client, sqlite_url, tmp_path)
    before = await (await client.get("/api/v1/limits", headers=ADMIN)).json()
    resp = await client.put("/api/v1/limits", headers=ADMIN, json=body)
    assert resp.status == 400
    assert (await resp.json())["error"]["message"]
    assert await (await client.get("/api/v1/limits", headers=ADMIN)).json() == before
    bad_json = await client.put("/api/v1/limits", headers=ADMIN, data=b"{oops")
    assert bad_json.status == 400


async def test_user_and_group_overrides(aiohttp_client: Any, ledger_url: str,
                                        tmp_path: Path) -> None:
    keys = seed_ledger(ledger_url, document())
    client = await start(aiohttp_client, ledger_url, tmp_path)
    alice = bearer(keys["alice"])

    async def source() -> tuple[str, int | None]:
        body = await (await client.get("/api/v1/usage/status", headers=alice)).json()
        return body["limit_source"], body["limit_micros"]

    assert await source() == ("none", None)
    resp = await client.put("/api/v1/limits/groups/ml", headers=ADMIN, json={"limit_usd": "3"})
    assert await resp.json() == {"group": "ml", "limit_micros": 3_000_000}
    assert await source() == ("group", 3_000_000)
    resp = await client.put("/api/v1/limits/users/alice", headers=ADMIN,
                            json={"limit_usd": "12.5"})
    assert await resp.json() == {"username": "alice", "limit_micros": 12_500_000,
                                 "unlimited": False}
    assert await source() == ("user", 12_500_000)
    await client.put("/api/v1/limits/users/alice", headers=ADMIN, json={"limit_micros": 7})
    assert await source() == ("user", 7)
    await client.put("/api/v1/limits/users/alice", headers=ADMIN, json={"unlimited": True})
    assert await source() == ("user", None)
    resp = await client.delete("/api/v1/limits/users/alice", headers=ADMIN)
    assert await resp.json() == {"username": "alice", "removed": True}
    assert await source() == ("group", 3_000_000)
    resp = await client.delete("/api/v1/limits/groups/ml", headers=ADMIN)
    assert await resp.json() == {"group": "ml", "removed": True}
    assert await source() == ("none", None)


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/api/v1/limits/users/nobody", {"limit_usd": "1"}, 404),
    ("/api/v1/limits/groups/nogroup", {"limit_usd": "1"}, 404),
    ("/api/v1/limits/users/alice", {}, 400),
    ("/api/v1/limits/users/alice", {"limit_micros": 0}, 400),
    ("/api/v1/limits/users/alice", {"limit_micros": -1}, 400),
    ("/api/v1/limits/users/alice", {"limit_micros": 5, "unlimited": True}, 400),
    ("/api/v1/limits/users/alice", {"unlimited": False}, 400),
    ("/api/v1/limits/users/alice", {"unlimited": "yes"}, 400),
    ("/api/v1/limits/users/alice", {"limit_usd": "1", "limit_micros": 1}, 400),
    ("/api/v1/limits/users/alice", {"limit": 1}, 400),
    ("/api/v1/limits/groups/ml", {"unlimited": True}, 400),
    ("/api/v1/limits/groups/ml", {}, 400),
    ("/api/v1/limits/groups/ml", {"limit_micros": 0}, 400),
])
async def test_override_errors(aiohttp_client: Any, sqlite_url: str, tmp_path: Path,
                               path: str, body: dict[str, Any], status: int) -> None:
    seed_ledger(sqlite_url, document())
    client = await start(aiohttp_client, sqlite_url, tmp_path)
    resp = await client.put(path, headers=ADMIN, json=body)
    assert resp.status == status
    assert (await resp.json())["error"]["code"] in {"invalid_body", "invalid_value",
                                                    "not_found"}
    assert (await client.delete("/api/v1/limits/users/nobody", headers=ADMIN)).status == 404
    assert (await client.delete("/api/v1/limits/groups/nogroup", headers=ADMIN)).status == 404


async def test_cost_table_pagination_and_search(aiohttp_client: Any, ledger_url: str,
                                                tmp_path: Path) -> None:
    people = [{"username": f"user{i:02d}", "name": f"Person {i}"} for i in range(7)]
    people.append({"username": "zed", "name": "Alice Cooper"})
    seed_ledger(ledger_url, policy(users=people), keys_for=())
    for i in range(7):  # user06 spends most
        record(ledger_url, f"user{i:02d}", usage=TokenUsage(input=100 * (i + 1), output=1),
               chat=f"c{i}")
    record(ledger_url, "zed", usage=TokenUsage(input=5, cache_read=100))
    record(ledger_url, "zed", usage=TokenUsage(input=1_000_000),
           at=NOW - timedelta(days=40))  # outside the default 30 days
    client = await start(aiohttp_client, ledger_url, tmp_path)

    resp = await client.get("/api/v1/usage/users", headers=ADMIN, params={"per_page": "3"})
    page1 = await resp.json()
    assert (page1["total"], page1["pages"], page1["page"], page1["per_page"]) == (8, 3, 1, 3)
    assert [u["username"] for u in page1["users"]] == ["user06", "user05", "user04"]
    assert page1["users"][0] == {
        "username": "user06", "name": "Person 6", "cost_micros": 702, "messages": 1,
        "chats": 1, "input_tokens": 700, "output_tokens": 1, "cache_read_tokens": 0,
        "cache_write_tokens": 0}
    assert (page1["from"], page1["to"]) == ("2026-02-12T12:00:00Z", "2026-03-14T12:00:00Z")
    page3 = await (await client.get("/api/v1/usage/users", headers=ADMIN,
                                     params={"per_page": "3", "page": "3"})).json()
    assert [u["username"] for u in page3["users"]] == ["user00", "zed"]
    empty = await (await client.get("/api/v1/usage/users", headers=ADMIN,
                                     params={"per_page": "3", "page": "4"})).json()
    assert empty["users"] == []

    # q searches username and display name, case-insensitively.
    found = await (await client.get("/api/v1/usage/users", headers=ADMIN,
                                    params={"q": "ALICE"})).json()
    assert [(u["username"], u["cost_micros"], u["cache_read_tokens"]) for u in found["users"]
            ] == [("zed", 5 + 50, 100)]
    found = await (await client.get("/api/v1/usage/users", headers=ADMIN,
                                    params={"q": "user0"})).json()
    assert found["total"] == 7
    # An explicit range takes in the older record.
    wide = await (await client.get("/api/v1/usage/users", headers=ADMIN, params={
        "q": "zed", "from": "2026-01-01", "to": "2026-03-15T00:00:00Z"})).json()
    assert wide["users"][0]["cost_micros"] == 1_000_000 + 55
    assert wide["users"][0]["messages"] == 2


@pytest.mark.parametrize("params", [
    {"per_page": "501"}, {"per_page": "0"}, {"page": "0"}, {"page": "x"},
    {"from": "yesterday"}, {"from": "2026-03-10T00:00:00"},
    {"from": "2026-03-10", "to": "2026-03-01"},
])
async def test_cost_table_rejects_bad_parameters(aiohttp_client: Any, sqlite_url: str,
                                                 tmp_path: Path, params: dict[str, str]) -> None:
    seed_ledger(sqlite_url, document())
    client = await start(aiohttp_client, sqlite_url, tmp_path)
    resp = await client.get("/api/v1/usage/users", headers=ADMIN, params=params)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_parameter"
    ok = await client.get("/api/v1/usage/users", headers=ADMIN, params={"per_page": "500"})
    assert ok.status == 200


async def test_user_detail(aiohttp_client: Any, ledger_url: str, tmp_path: Path) -> None:
    seed_ledger(ledger_url, policy(users=[{"username": "alice", "name": "Alice Liddell",
                                           "email": "a@example.com", "limit_usd": "0.001"}]),
                keys_for=())
    record(ledger_url, "alice", usage=TokenUsage(input=100, output=50), chat="chat-a")
    record(ledger_url, "alice", usage=TokenUsage(input=10), chat="chat-a")
    record(ledger_url, "alice", usage=TokenUsage(input=10, output=10), model="claude-test",
           chat="chat-b")
    record(ledger_url, "alice", usage=TokenUsage(input=10), model="free-model")
    client = await start(aiohttp_client, ledger_url, tmp_path)
    resp = await client.get("/api/v1/usage/users/alice", headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    assert (body["username"], body["name"], body["email"]) == ("alice", "Alice Liddell",
                                                               "a@example.com")
    assert body["summary"]["messages"] == 4
    assert body["summary"]["chats"] == 2
    assert body["summary"]["cost_micros"] == 200 + 10 + 180
    limit = body["limit"]
    assert (limit["limit_micros"], limit["limit_source"], limit["current_spend_micros"],
            limit["is_limited"], limit["blocked"]) == (1000, "user", 390, True, False)
    assert limit["utilization"] == pytest.approx(0.39)
    assert [(m["model"], m["cost_micros"], m["messages"]) for m in body["models"]] == [
        ("gpt-test", 210, 2), ("claude-test", 180, 1), ("free-model", 0, 1)]
    assert [(c["chat"], c["messages"], c["cost_micros"], c["first_seen"])
            for c in body["chats"]] == [("chat-a", 2, 210, "2026-03-14"),
                                        ("chat-b", 1, 180, "2026-03-14")]
    missing = await client.get("/api/v1/usage/users/nobody", headers=ADMIN)
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
