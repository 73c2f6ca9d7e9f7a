"""The OpenAI Responses API through the gateway: the official SDK against a real gateway, a real
ledger and the fake provider over real HTTP. Creating a response is billed to the micro; the
routes on a stored response are forwarded unbilled, and only to the user it was relayed to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from ledger.tokens import TokenUsage
from limiter.http.app_keys import REGISTRY
from tests.support.agent_replies import Reply
from tests.support.fake_agents_provider import FakeAgentsProvider
from tests.support.gateway import (
    apply,
    gateway_app,
    limiter_settings,
    metric,
    policy,
    query,
    seed_ledger,
    settled,
)

USAGE = TokenUsage(input=730, output=95, cache_read=1024)
REPLY = Reply(text="Paris is the capital of France.", usage=USAGE, reasoning_tokens=40)
# gpt-test: 1 micro per input token, 2 per output token, 0.5 per cached token.
COST = USAGE.input * 1 + USAGE.output * 2 + USAGE.cache_read // 2
PROVIDER_KEY = "Bearer sk-openai-SECRET"

Gateway = Callable[[], Awaitable[Any]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAgentsProvider]:
    async with FakeAgentsProvider(default=REPLY) as provider:
        yield provider


@pytest.fixture
def gateway(aiohttp_client: Any, ledger_url: str, tmp_path: Path,
            fake: FakeAgentsProvider) -> Gateway:
    """Starts a gateway in front of the fake (each call: a new process's worth of state)."""

    async def start() -> Any:
        app = gateway_app(ledger_url, limiter_settings(tmp_path, fake.base_url),
                          registry=CollectorRegistry())
        return await aiohttp_client(app)

    return start


@pytest.fixture
def keys(ledger_url: str) -> dict[str, str]:
    return seed_ledger(ledger_url)


@pytest.fixture
async def server(gateway: Gateway) -> Any:
    return await gateway()


@pytest.fixture
async def sdk(server: Any, keys: dict[str, str]
              ) -> AsyncIterator[Callable[[str], Awaitable[openai.AsyncOpenAI]]]:
    """`await sdk(user)`: the openai SDK with that user's key, on the started gateway."""
    clients: list[openai.AsyncOpenAI] = []

    async def client(user: str) -> openai.AsyncOpenAI:
        clients.append(openai.AsyncOpenAI(base_url=str(server.make_url("/v1")),
                                          api_key=keys[user], max_retries=0))
        return clients[-1]

    yield client
    for made in clients:
        await made.close()


def ledger_rows(url: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in query(
        url, "SELECT u.username, mo.name, m.input_tokens, m.cache_read_tokens, "
             "m.output_tokens, m.cost_micros, m.partial FROM messages m "
             "JOIN users u ON u.id = m.user_id JOIN models mo ON mo.id = m.model_id "
             "ORDER BY m.created_at, m.id")]


def owners(url: str) -> dict[str, str]:
    return {row.response_id: row.username for row in query(
        url, "SELECT o.response_id, u.username FROM response_owners o "
             "JOIN users u ON u.id = o.user_id")}


def billed_row(user: str, *, partial: bool = False) -> tuple[Any, ...]:
    return (user, "gpt-test", USAGE.input, USAGE.cache_read, USAGE.output, COST, partial)


async def test_create_plain_and_streamed_are_billed_to_the_micro(
        sdk: Callable[[str], Awaitable[openai.AsyncOpenAI]], server: Any,
        fake: FakeAgentsProvider, ledger_url: str) -> None:
    alice = await sdk("alice")
    plain = await alice.responses.create(model="gpt-test", input="Capital of France?",
                                         store=True, reasoning={"effort": "low"},
                                         prompt_cache_key="k1")
    assert plain.output_text == REPLY.text
    stream = await alice.responses.create(model="gpt-test", input="again", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    await settled(server.app)

    assert ledger_rows(ledger_url) == [billed_row("alice"), billed_row("alice")]
    assert fake.reported() == [USAGE, USAGE]
    # Every field went upstream as the client sent it; the gateway's key, not the client's.
    first = fake.calls[0]
    assert first.body["reasoning"] == {"effort": "low"} and first.body["prompt_cache_key"] == "k1"
    assert "stream_options" not in fake.calls[1].body
    assert first.headers["Authorization"] == PROVIDER_KEY
    assert owners(ledger_url) == {plain.id: "alice", "resp_fake2": "alice"}


async def test_background_is_refused_before_anything_goes_upstream(
        sdk: Callable[[str], Awaitable[openai.AsyncOpenAI]], server: Any,
        fake: FakeAgentsProvider, ledger_url: str) -> None:
    alice = await sdk("alice")
    with pytest.raises(openai.BadRequestError) as refused:
        await alice.responses.create(model="gpt-test", input="later", background=True)
    assert refused.value.status_code == 400
    assert "cannot be metered" in refused.value.message
    assert fake.calls == [] and ledger_rows(ledger_url) == []


async def test_the_owner_reaches_every_stored_response_route_unbilled(
        sdk: Callable[[str], Awaitable[openai.AsyncOpenAI]], server: Any, gateway: Gateway,
        keys: dict[str, str], fake: FakeAgentsProvider, ledger_url: str) -> None:
    alice = await sdk("alice")
    created = await alice.responses.create(model="gpt-test", input="remember me")
    # Named at once (before the ledger writer's commit) and after it: both pass.
    follow = await alice.responses.create(model="gpt-test", input="and then?",
                                          previous_response_id=created.id)
    await settled(server.app)

    # A second gateway (nothing in memory) knows the owner from the ledger.
    again = openai.AsyncOpenAI(base_url=str((await gateway()).make_url("/v1")),
                               api_key=keys["alice"], max_retries=0)
    async with again:
        assert (await again.responses.retrieve(created.id)).output_text == REPLY.text
        items = [item async for item in again.responses.input_items.list(created.id)]
        assert [item.type for item in items] == ["message"]
        assert (await again.responses.cancel(created.id)).status == "cancelled"
        counted = await again.responses.input_tokens.count(
            model="gpt-test", input="hi", previous_response_id=follow.id)
        assert counted.input_tokens > 0
        await again.responses.delete(created.id)

    side = fake.calls[2:]
    assert [(call.method, call.path) for call in side] == [
        ("GET", f"/v1/responses/{created.id}"),
        ("GET", f"/v1/responses/{created.id}/input_items"),
        ("POST", f"/v1/responses/{created.id}/cancel"),
        ("POST", "/v1/responses/input_tokens"),
        ("DELETE", f"/v1/responses/{created.id}")]
    assert all(call.headers["Authorization"] == PROVIDER_KEY for call in side)
    assert side[0].body is None and "Content-Type" not in side[0].headers
    # Only the two creations were billed.
    assert ledger_rows(ledger_url) == [billed_row("alice"), billed_row("alice")]


async def test_another_users_response_is_not_found_on_every_route(
        sdk: Callable[[str], Awaitable[openai.AsyncOpenAI]], server: Any,
        fake: FakeAgentsProvider, ledger_url: str) -> None:
    alice, bob = await sdk("alice"), await sdk("bob")
    created = await alice.responses.create(model="gpt-test", input="mine")
    calls = len(fake.calls)
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: bob.responses.retrieve(created.id),
        lambda: bob.responses.delete(created.id),
        lambda: bob.responses.cancel(created.id),
        lambda: bob.responses.input_items.list(created.id),
        lambda: bob.responses.input_tokens.count(model="gpt-test", input="x",
                                                 previous_response_id=created.id),
        lambda: bob.responses.create(model="gpt-test", input="x",
                                     previous_response_id=created.id),
        lambda: bob.responses.create(model="gpt-test", input="x", stream=True,
                                     previous_response_id=created.id),
        # An id nobody was given looks the same.
        lambda: alice.responses.retrieve("resp_never_relayed"),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError) as missing:
            await attempt()
        # OpenAI's own shape, so a client shows it as it would OpenAI's.
        assert missing.value.body == {
            "message": missing.value.message.removeprefix("Error code: 404 - "),
            "type": "invalid_request_error", "param": None, "code": None}
        assert "not found" in missing.value.message
    assert len(fake.calls) == calls  # none of them went upstream
    await settled(server.app)
    assert ledger_rows(ledger_url) == [billed_row("alice")]


class PausingProvider(FakeAgentsProvider):
    """Sends a stream's first events, then waits (an answer still being generated)."""

    def __init__(self, default: Reply) -> None:
        super().__init__(default=default)
        self.resume = asyncio.Event()
        self.disconnected = asyncio.Event()

    async def _stream(self, request: web.Request, events: list[str],  # type: ignore[override]
                      content_type: str = "text/event-stream") -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for event in events[:3]:
            await response.write(event.encode())
        while not self.resume.is_set():
            if request.transport is None or request.transport.is_closing():
                self.disconnected.set()  # the gateway hung up on the provider
                raise ConnectionResetError("the caller hung up")
            await asyncio.sleep(0.005)
        return response


async def test_a_client_that_aborts_a_stream_leaves_a_partial_record(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, keys: dict[str, str]) -> None:
    fake = PausingProvider(REPLY)
    await fake.start()
    try:
        app = gateway_app(ledger_url, limiter_settings(tmp_path, fake.base_url),
                          registry=CollectorRegistry())
        client = await aiohttp_client(app)
        resp = await client.post("/v1/responses", headers={
            "Authorization": f"Bearer {keys['alice']}"},
            json={"model": "gpt-test", "input": "a long task " * 50, "stream": True})
        assert resp.status == 200
        assert b"response.created" in await resp.content.readany()
        resp.close()  # the agent is interrupted mid-answer
        await asyncio.wait_for(fake.disconnected.wait(), 10)
        await settled(app)
        [row] = ledger_rows(ledger_url)
        assert row[0] == "alice" and row[-1]  # partial
        assert row[5] > 0  # estimated, never free
        # The id from `response.created` is the user's even though the answer was cut.
        assert owners(ledger_url) == {"resp_fake1": "alice"}
    finally:
        fake.resume.set()
        await fake.close()


async def test_stored_responses_stay_open_over_the_limit_and_are_counted_by_route(
        sdk: Callable[[str], Awaitable[openai.AsyncOpenAI]], server: Any,
        ledger_url: str) -> None:
    alice = await sdk("alice")
    created = await alice.responses.create(model="gpt-test", input="spend it all")
    apply(ledger_url, policy(limits={"default_limit_usd": 0.001}))  # 1000 micros < COST
    await settled(server.app)
    with pytest.raises(openai.ConflictError):
        await alice.responses.create(model="gpt-test", input="more")
    # Retrieving generates nothing: it stays open to a user over the limit.
    assert (await alice.responses.retrieve(created.id)).id == created.id
    registry = server.app[REGISTRY]
    assert metric(registry, "agentmeter_limiter_requests_total", route="/v1/responses",
                  code="409", provider="openai") == 1
    assert metric(registry, "agentmeter_limiter_requests_total",
                  route="/v1/responses/{response_id}", code="200", provider="openai") == 1


async def test_strict_mode_bounds_a_response_by_its_max_output_tokens(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path,
        fake: FakeAgentsProvider) -> None:
    # 1,500 micros left: the model's own cap (1,000 output tokens at 2 micros) is too much to
    # hold, `max_output_tokens: 100` is not.
    keys = seed_ledger(sqlite_url, policy(users=[{"username": "alice", "limit_usd": "0.0015"}]),
                       keys_for=("alice",))
    app = gateway_app(sqlite_url, limiter_settings(tmp_path, fake.base_url,
                                                   enforcement="strict"),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    headers = {"Authorization": f"Bearer {keys['alice']}"}
    body = {"model": "gpt-test", "input": "hi"}
    assert (await client.post("/v1/responses", json=body, headers=headers)).status == 409
    allowed = await client.post("/v1/responses", json={**body, "max_output_tokens": 100},
                                headers=headers)
    assert allowed.status == 200
    await settled(app)
    assert ledger_rows(sqlite_url) == [billed_row("alice")]
    assert query(sqlite_url, "SELECT count(*) FROM reservations")[0][0] == 0
