"""Hostile headers: spoofed identities, dead keys, other people's data, admin routes, junk bytes.

Each refusal is checked the way an attacker would meet it (status and JSON error) and the way an
operator would audit it (every ledger table unchanged, nothing forwarded to the provider).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ledger.engine import create_sync_engine
from ledger.keys import create_key, revoke_keys
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.gateway import (
    anthropic_request,
    bearer,
    gateway_app,
    limiter_settings,
    openai_request,
    policy,
    query,
    seed_ledger,
    settled,
)
from tests.support.hostile import ERROR_EXTRAS, ledger_dump

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
SECRET = "shared-s3cret"
ADMIN_TOKEN = "admin-token-xyz"
ADMIN_ROUTES = [
    ("GET", "/api/v1/limits", None),
    ("PUT", "/api/v1/limits", {"enabled": False}),
    ("PUT", "/api/v1/limits/users/alice", {"unlimited": True}),
    ("DELETE", "/api/v1/limits/users/bob", None),
    ("PUT", "/api/v1/limits/groups/ml", {"limit_usd": "1000"}),
    ("DELETE", "/api/v1/limits/groups/ml", None),
    ("GET", "/api/v1/usage/users", None),
    ("GET", "/api/v1/usage/users/bob", None),
]


@pytest.fixture
async def upstream() -> Any:
    fake = FakeUpstream(Answer(usage=TokenUsage(input=100, output=10)))
    await fake.start()
    yield fake
    await fake.close()


def seed(url: str) -> dict[str, str]:
    document = policy(
        limits={"default_limit_usd": 1},
        users=[{"username": "alice", "name": "Alice Liddell"},
               {"username": "bob", "name": "Bob Builder", "limit_usd": 5}],
        groups=[{"name": "ml", "members": ["alice"], "limit_usd": 2}])
    return seed_ledger(url, document)


async def start(aiohttp_client: Any, url: str, tmp_path: Path, upstream: FakeUpstream,
                **changes: Any) -> Any:
    settings = limiter_settings(tmp_path, upstream.base_url,
                                **{"trusted_header_secret": SECRET, **changes})
    return await aiohttp_client(gateway_app(url, settings, registry=CollectorRegistry()))


def error_code(body: Any) -> str:
    assert isinstance(body, dict) and set(body) - ERROR_EXTRAS == {"error"}, body
    assert set(body["error"]) - ERROR_EXTRAS == {"code", "message"} and body["error"]["message"]
    return str(body["error"]["code"])


def messages_of(url: str, username: str) -> int:
    return int(query(url, "SELECT count(*) FROM messages m JOIN users u ON u.id = m.user_id "
                          "WHERE u.username = :name", name=username)[0][0])


# -- a spoofed trusted-user header --------------------------------------------------------------


async def test_spoofed_trusted_user_header_without_the_secret_is_refused(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed(ledger_url)
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream)
    before = ledger_dump(ledger_url)
    spoofs = [
        {"X-Forwarded-User": "bob"},
        {"X-Forwarded-User": "bob", "X-Agentmeter-Secret": "guess"},
        {"X-Forwarded-User": "bob", "X-Agentmeter-Secret": ""},
        {"X-Forwarded-User": "bob", "X-Agentmeter-Secret": SECRET[:-1]},
        {"X-Forwarded-User": "bob", "X-Agentmeter-Secret": SECRET + "x"},
        {"X-Forwarded-User": "mallory", "X-Agentmeter-Secret": SECRET.upper()},
        {"X-Forwarded-User": "bob", "Authorization": f"Bearer {SECRET}"},
    ]
    for headers in spoofs:
        for path, body in ((CHAT, openai_request()), (MESSAGES, anthropic_request())):
            resp = await client.post(path, json=body, headers=headers)
            assert resp.status == 401, (headers, await resp.text())
            assert error_code(await resp.json()) in {"missing_api_key", "invalid_api_key"}
        resp = await client.get("/api/v1/usage/status", headers=headers)
        assert resp.status == 401, headers
    await settled(client.app)
    assert ledger_dump(ledger_url) == before  # no user "mallory", no message for bob
    assert upstream.received == []

    # With alice's own key next to a spoofed header, the request is alice's, never bob's.
    resp = await client.post(CHAT, json=openai_request(),
                             headers={**bearer(keys["alice"]), "X-Forwarded-User": "bob"})
    assert resp.status == 200
    await settled(client.app)
    assert (messages_of(ledger_url, "alice"), messages_of(ledger_url, "bob")) == (1, 0)


async def test_trusted_header_is_ignored_when_no_secret_is_configured(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    seed(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream,
                         trusted_header_secret=None)
    before = ledger_dump(sqlite_url)
    for secret in ("", "None", "null", SECRET):
        resp = await client.post(CHAT, json=openai_request(),
                                 headers={"X-Forwarded-User": "bob",
                                          "X-Agentmeter-Secret": secret})
        assert resp.status == 401
    assert ledger_dump(sqlite_url) == before
    assert upstream.received == []


# -- a revoked key ------------------------------------------------------------------------------


async def test_revoked_key_is_refused_everywhere(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed(ledger_url)
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.begin() as conn:
        spare = create_key(conn, "bob")
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream)
    # Used once while valid: the gateway has seen (and may remember) this key.
    assert (await client.post(CHAT, json=openai_request(),
                              headers=bearer(keys["bob"]))).status == 200
    await settled(client.app)
    with engine.begin() as conn:
        first_id = conn.exec_driver_sql("SELECT id FROM api_keys WHERE key_hash <> ''"
                                        " ORDER BY created_at").scalars().all()
        assert revoke_keys(conn, "bob", key_id=[k for k in first_id
                                                 if k != spare.key_id][-1]) == 1
    engine.dispose()
    before = ledger_dump(ledger_url)
    received = len(upstream.received)
    revoked = keys["bob"]
    attempts = [
        ("POST", CHAT, openai_request(), bearer(revoked)),
        ("POST", CHAT, openai_request(), {"x-api-key": revoked}),
        ("POST", MESSAGES, anthropic_request(), {"x-api-key": revoked}),
        ("POST", MESSAGES, anthropic_request(stream=True), bearer(revoked)),
        ("GET", "/api/v1/usage/status", None, bearer(revoked)),
        ("GET", "/v1/models", None, bearer(revoked)),
        ("GET", "/api/v1/limits", None, bearer(revoked)),
    ]
    for method, path, body, headers in attempts:
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status == 401, (method, path, await resp.text())
        assert error_code(await resp.json()) == "invalid_api_key"
    await settled(client.app)
    assert ledger_dump(ledger_url) == before
    assert len(upstream.received) == received
    # bob's other key still works: revoking one key is not locking the user out.
    assert (await client.post(CHAT, json=openai_request(),
                              headers=bearer(spare.secret))).status == 200


# -- another user's status ---------------------------------------------------------------------


async def test_another_users_status_cannot_be_read(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = seed(ledger_url)
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream)
    # bob spends, alice does not: any leak of bob's figures would show.
    assert (await client.post(CHAT, json=openai_request(),
                              headers=bearer(keys["bob"]))).status == 200
    await settled(client.app)
    before = ledger_dump(ledger_url)
    alice = bearer(keys["alice"])
    asks = [
        ("/api/v1/usage/status?user=bob", alice),
        ("/api/v1/usage/status?username=bob", alice),
        ("/api/v1/usage/status/bob", alice),
        ("/api/v1/usage/status", {**alice, "X-Forwarded-User": "bob"}),
        ("/api/v1/usage/status", {**alice, "X-Forwarded-User": "bob",
                                  "X-Agentmeter-Secret": "guess"}),
    ]
    for path, headers in asks:
        resp = await client.get(path, headers=headers)
        body = await resp.json()
        if resp.status == 200:
            # Only ever the caller's own status: alice's default limit, nothing spent.
            assert body["username"] == "alice", (path, body)
            assert body["current_spend_micros"] == 0
            assert (body["limit_micros"], body["limit_source"]) == (1_000_000, "group") or (
                body["limit_micros"], body["limit_source"]) == (2_000_000, "group")
        else:
            assert resp.status == 404, (path, body)
            error_code(body)
    # The admin detail route is where bob's figures live: refused to alice's key.
    for path in ("/api/v1/usage/users/bob", "/api/v1/usage/users?q=bob"):
        resp = await client.get(path, headers=alice)
        assert resp.status == 403
        assert error_code(await resp.json()) == "forbidden"
    assert ledger_dump(ledger_url) == before


# -- admin routes without the token ------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES,
                         ids=[f"{m} {p}" for m, p, _ in ADMIN_ROUTES])
async def test_admin_route_without_the_admin_token_is_refused(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream,
        method: str, path: str, body: Any) -> None:
    keys = seed(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream)
    before = ledger_dump(sqlite_url)
    attempts: list[tuple[dict[str, str], str, int]] = [
        ({}, "", 401),
        (bearer(ADMIN_TOKEN[:-1]), "", 401),
        (bearer(ADMIN_TOKEN + "z"), "", 401),
        (bearer(ADMIN_TOKEN.upper()), "", 401),
        ({"Authorization": f"Basic {ADMIN_TOKEN}"}, "", 401),
        ({"Authorization": ADMIN_TOKEN}, "", 401),
        ({"X-Admin-Token": ADMIN_TOKEN}, "", 401),
        ({"Cookie": f"token={ADMIN_TOKEN}"}, "", 401),
        ({}, f"?token={ADMIN_TOKEN}&admin_token={ADMIN_TOKEN}", 401),
        ({"X-Agentmeter-Secret": SECRET}, "", 401),
        ({"X-Forwarded-User": "admin", "X-Agentmeter-Secret": "guess"}, "", 401),
        (bearer(keys["alice"]), "", 403),
        ({"x-api-key": keys["bob"]}, "", 403),
        ({"X-Forwarded-User": "alice", "X-Agentmeter-Secret": SECRET}, "", 403),
    ]
    for headers, suffix, status in attempts:
        resp = await client.request(method, path + suffix, json=body, headers=headers)
        assert resp.status == status, (headers, suffix, await resp.text())
        assert error_code(await resp.json()) in {"missing_api_key", "invalid_api_key",
                                                 "forbidden"}
    assert ledger_dump(sqlite_url) == before
    resp = await client.request(method, path, json=body, headers=bearer(ADMIN_TOKEN))
    assert resp.status == 200, await resp.text()


async def test_admin_token_unset_refuses_every_admin_route(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    seed(sqlite_url)
    client = await start(aiohttp_client, sqlite_url, tmp_path, upstream, admin_token=None)
    before = ledger_dump(sqlite_url)
    for method, path, body in ADMIN_ROUTES:
        for headers in ({}, bearer(ADMIN_TOKEN), bearer(""), bearer("None")):
            resp = await client.request(method, path, json=body, headers=headers)
            assert resp.status == 401, (method, path, headers)
    assert ledger_dump(sqlite_url) == before


# -- undecodable and oversized header values ---------------------------------------------------


async def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Sends bytes exactly as given; the answer's status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        rest = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def post_head(path: str, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(length).encode()
            + b"\r\n" + lines + b"\r\n")


UNDECODABLE = b"caf\xe9-\xff\xfe"


@pytest.mark.parametrize(("path", "header"), [
    (CHAT, b"X-Forwarded-User"), (CHAT, b"X-Agentmeter-Secret"), (CHAT, b"X-Chat-ID"),
    (CHAT, b"Authorization"), (CHAT, b"x-api-key"), ("/api/v1/limits", b"Authorization"),
    ("/api/v1/usage/status", b"x-api-key"),
])
async def test_undecodable_header_bytes_get_a_clean_answer(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, upstream: FakeUpstream,
        path: str, header: bytes) -> None:
    """Header bytes that are not UTF-8 (aiohttp hands them on surrogate-escaped)."""
    keys = seed(ledger_url)
    client = await start(aiohttp_client, ledger_url, tmp_path, upstream)
    raw = json.dumps(openai_request()).encode()
    sent: dict[bytes, bytes] = {}
    if header in (b"X-Forwarded-User", b"X-Agentmeter-Secret"):
        sent = {b"X-Agentmeter-Secret": SECRET.encode(), b"X-Forwarded-User": b"dora"}
    elif header == b"X-Chat-ID":
        sent = {b"Authorization": b"Bearer " + keys["alice"].encode()}
    sent[header] = b"Bearer am-" + UNDECODABLE if header == b"Authorization" else UNDECODABLE
    before = ledger_dump(ledger_url)
    head = post_head(path, list(sent.items()), len(raw))
    if path != CHAT:
        head = head.replace(b"POST ", b"GET ", 1)
        raw = b""
        head = head.replace(b"Content-Length: " + str(len(json.dumps(openai_request()))).encode(),
                            b"Content-Length: 0")
    status, answer = await raw_request(client.port, head, raw)
    await settled(client.app)
    assert status < 500, answer
    # Nothing in these requests can be trusted or stored: each one is refused.
    assert 400 <= status < 500, answer
    error_code(json.loads(answer))
    assert ledger_dump(ledger_url) == before
    assert upstream.received == []
    # The gateway is still fine for the next caller.
    resp = await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    assert resp.status == 200
