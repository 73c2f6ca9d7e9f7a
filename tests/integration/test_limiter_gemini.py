"""The Gemini API through the gateway: google-genai as the client, a real ledger, the fake
provider over real HTTP; the ledger holds what the fake reported, to the micro."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from prometheus_client import CollectorRegistry

from ledger.tokens import TokenUsage
from limiter.http.app_keys import REGISTRY
from tests.support import shapes_gemini
from tests.support.agent_replies import Reply
from tests.support.fake_agents_provider import FakeAgentsProvider
from tests.support.gateway import (
    BASE_POLICY,
    GOOGLE_KEY,
    gateway_app,
    limiter_settings,
    metric,
    policy,
    query,
    seed_ledger,
    settled,
)
from tests.support.local_server import LocalServer

# google-genai subclasses aiohttp's ClientSession when it opens its async client.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

# Micros per token: input 2, output 10, cache reads 0.5.
GEMINI_POLICY = policy(models=[
    *BASE_POLICY["models"],
    {"name": "gemini-test", "provider": "google", "aliases": ["gemini-test-latest"],
     "pricing": {"input": 2, "output": 10, "cache_read": 0.5}},
])
USAGE = TokenUsage(input=730, output=95, cache_read=1024)
REPLY = Reply(text="Paris is the capital of France.", usage=USAGE, reasoning_tokens=40)
COST = 730 * 2 + 95 * 10 + 1024 // 2
STREAM_PATH = "/v1beta/models/gemini-test:streamGenerateContent"


def rows(url: str) -> list[Any]:
    return query(url, "SELECT m.provider, mo.name AS model, m.input_tokens, m.output_tokens, "
                      "m.cache_read_tokens, m.cost_micros, m.partial FROM messages m "
                      "JOIN models mo ON mo.id = m.model_id ORDER BY m.created_at")


def recorded(url: str) -> list[tuple[TokenUsage, int, bool]]:
    return [(TokenUsage(input=r.input_tokens, output=r.output_tokens,
                        cache_read=r.cache_read_tokens), r.cost_micros, bool(r.partial))
            for r in rows(url)]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAgentsProvider]:
    async with FakeAgentsProvider(default=REPLY, models={"google": ["gemini-test"]}) as provider:
        yield provider


async def start_gateway(aiohttp_client: Any, url: str, tmp_path: Path,
                        upstream_url: str) -> Any:
    settings = limiter_settings(tmp_path, upstream_url, google=True)
    app = gateway_app(url, settings, registry=CollectorRegistry())
    return await aiohttp_client(app)


@pytest.fixture
def keys(ledger_url: str) -> dict[str, str]:
    return seed_ledger(ledger_url, GEMINI_POLICY)


@pytest.fixture
async def gateway(aiohttp_client: Any, ledger_url: str, tmp_path: Path,
                  fake: FakeAgentsProvider, keys: dict[str, str]) -> Any:
    return await start_gateway(aiohttp_client, ledger_url, tmp_path, fake.base_url)


@pytest.fixture
async def gemini(gateway: Any, keys: dict[str, str]
                 ) -> AsyncIterator[Callable[[str], genai.Client]]:
    """google-genai clients of the gateway on an API version, with alice's key."""
    clients: list[genai.Client] = []
    base = str(gateway.make_url("/")).rstrip("/")

    def make(api_version: str = "v1beta") -> genai.Client:
        clients.append(genai.Client(api_key=keys["alice"], http_options=genai_types.HttpOptions(
            base_url=base, api_version=api_version)))
        return clients[-1]

    yield make
    for client in clients:
        await client.aio.aclose()
        client.close()


def assert_gateway_key_only(fake: FakeAgentsProvider, client_key: str) -> None:
    call = fake.calls[-1]
    assert call.headers["x-goog-api-key"] == GOOGLE_KEY
    assert all(client_key not in value for value in call.headers.values())
    assert client_key not in call.query


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
async def test_generate_content_is_recorded_as_the_fake_reported(
        fake: FakeAgentsProvider, gemini: Callable[[str], genai.Client], gateway: Any,
        ledger_url: str, keys: dict[str, str], api_version: str) -> None:
    answer = await gemini(api_version).aio.models.generate_content(
        model="gemini-test-latest", contents="Capital of France?")
    assert answer.text == REPLY.text
    assert fake.calls[-1].path == f"/{api_version}/models/gemini-test-latest:generateContent"
    assert_gateway_key_only(fake, keys["alice"])
    await settled(gateway.app)
    # Cache reads split out, thoughts added to the output, the tool-use prompt to the input.
    assert recorded(ledger_url) == [(USAGE, COST, False)]
    assert fake.reported() == [USAGE]
    assert rows(ledger_url)[0].provider == "google"


async def test_sse_stream_records_the_last_running_total(
        fake: FakeAgentsProvider, gemini: Callable[[str], genai.Client], gateway: Any,
        ledger_url: str) -> None:
    chunks = [chunk async for chunk in await gemini("v1beta").aio.models
              .generate_content_stream(model="gemini-test", contents="Capital of France?")]
    assert len(chunks) > 2  # several running totals: their sum would be far more
    assert "".join(chunk.text or "" for chunk in chunks) == REPLY.text
    assert fake.calls[-1].query == "alt=sse"
    await settled(gateway.app)
    assert recorded(ledger_url) == [(USAGE, COST, False)]


async def test_count_tokens_is_forwarded_and_not_billed(
        fake: FakeAgentsProvider, gemini: Callable[[str], genai.Client], gateway: Any,
        ledger_url: str, keys: dict[str, str]) -> None:
    counted = await gemini("v1").aio.models.count_tokens(model="gemini-test", contents="hello")
    assert counted.total_tokens is not None and counted.total_tokens > 0
    assert fake.calls[-1].path == "/v1/models/gemini-test:countTokens"
    assert_gateway_key_only(fake, keys["alice"])
    await settled(gateway.app)
    assert rows(ledger_url) == []


async def test_key_in_the_query_is_accepted_and_never_forwarded(
        fake: FakeAgentsProvider, gateway: Any, ledger_url: str, keys: dict[str, str]) -> None:
    resp = await gateway.post(f"{STREAM_PATH}?alt=sse&key={keys['bob']}",
                              json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert resp.status == 200
    assert "finishReason" in await resp.text()
    assert fake.calls[-1].query == "alt=sse"
    assert_gateway_key_only(fake, keys["bob"])
    await settled(gateway.app)
    assert recorded(ledger_url) == [(USAGE, COST, False)]
    # Counted under the route's template, never the model-bearing path.
    assert metric(gateway.app[REGISTRY], "agentmeter_limiter_requests_total",
                  route="/v1beta/models/{model}:streamGenerateContent", code="200",
                  provider="google") == 1


async def test_unknown_model_and_missing_key_are_refused(
        fake: FakeAgentsProvider, gemini: Callable[[str], genai.Client], gateway: Any,
        ledger_url: str) -> None:
    with pytest.raises(genai_errors.ClientError) as refused:
        await gemini("v1beta").aio.models.generate_content(model="gemini-unknown",
                                                           contents="hi")
    assert refused.value.code == 400
    assert "not declared" in (refused.value.message or "")
    resp = await gateway.post("/v1beta/models/gemini-test:generateContent", json={})
    assert resp.status == 401
    assert fake.calls == []
    assert rows(ledger_url) == []


class GatedGemini(LocalServer):
    """A Gemini upstream whose JSON-array stream waits after its first element until the
    test lets it go on, and which tells when its client (the gateway) went away."""

    def __init__(self) -> None:
        super().__init__()
        self.go_on = asyncio.Event()
        self.disconnected = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1beta/models/{target}", self._stream)
        return app

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        pieces = shapes_gemini.array_stream(shapes_gemini.stream_chunks(REPLY, "gemini-test"))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(pieces[0].encode())
        while not self.go_on.is_set():  # aiohttp does not cancel a handler whose client left
            if request.transport is None or request.transport.is_closing():
                self.disconnected.set()
                return response
            await asyncio.sleep(0.02)
        for piece in pieces[1:]:
            await response.write(piece.encode())
        await response.write_eof()
        return response


@pytest.fixture
async def gated() -> AsyncIterator[GatedGemini]:
    upstream = GatedGemini()
    await upstream.start()
    yield upstream
    upstream.go_on.set()
    await upstream.close()


async def test_json_array_stream_is_relayed_as_it_arrives(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, gated: GatedGemini,
        keys: dict[str, str]) -> None:
    gateway = await start_gateway(aiohttp_client, ledger_url, tmp_path, gated.base_url)
    resp = await gateway.post(STREAM_PATH, json={"contents": []},
                              headers={"x-goog-api-key": keys["alice"]})
    assert resp.status == 200
    # The first element reaches the client while the provider still holds back the rest.
    first = await asyncio.wait_for(resp.content.readany(), 5)
    assert first.startswith(b"[") and b"usageMetadata" in first
    gated.go_on.set()
    rest = await resp.read()
    elements = json.loads(first + rest)
    assert len(elements) > 2
    await settled(gateway.app)
    assert recorded(ledger_url) == [(USAGE, COST, False)]


async def test_client_aborting_a_json_array_stream_leaves_a_partial_record(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path, gated: GatedGemini,
        keys: dict[str, str]) -> None:
    gateway = await start_gateway(aiohttp_client, ledger_url, tmp_path, gated.base_url)
    resp = await gateway.post(STREAM_PATH, json={"contents": []},
                              headers={"x-goog-api-key": keys["alice"]})
    assert await asyncio.wait_for(resp.content.readany(), 5)
    resp.close()  # the agent is interrupted mid-answer
    await asyncio.wait_for(gated.disconnected.wait(), 10)  # the upstream was closed too
    await settled(gateway.app)
    [row] = rows(ledger_url)
    assert row.partial and row.provider == "google"
    # The first element's running total already carried the input side exactly.
    assert (row.input_tokens, row.cache_read_tokens) == (USAGE.input, USAGE.cache_read)
    assert row.output_tokens > 0


async def test_strict_mode_holds_what_max_output_tokens_allows(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, fake: FakeAgentsProvider) -> None:
    # 5,000 micros of room: 1,000 output tokens at 10 micros cannot fit, 100 can.
    users = [{"username": "alice", "limit_usd": "0.005"}]
    keys = seed_ledger(sqlite_url, policy(users=users, models=GEMINI_POLICY["models"]),
                       keys_for=("alice",))
    settings = limiter_settings(tmp_path, fake.base_url, google=True, enforcement="strict")
    gateway = await aiohttp_client(gateway_app(sqlite_url, settings,
                                               registry=CollectorRegistry()))
    headers = {"x-goog-api-key": keys["alice"]}

    def ask(cap: int) -> dict[str, Any]:
        return {"contents": [{"parts": [{"text": "hi"}]}],
                "generationConfig": {"maxOutputTokens": cap}}

    path = "/v1beta/models/gemini-test:generateContent"
    refused = await gateway.post(path, json=ask(1000), headers=headers)
    assert refused.status == 409
    assert fake.calls == []
    answered = await gateway.post(path, json=ask(100), headers=headers)
    assert answered.status == 200
    assert len(fake.calls) == 1
    body = await refused.json()  # the documented fields and the Gemini API's error object
    assert body["limit_source"] == "user" and body["limit_micros"] == 5000
    assert body["error"]["code"] == 409 and body["error"]["status"] == "ABORTED"
    assert body["error"]["message"] == body["message"]
    assert body["message"].startswith("Chat usage limit exceeded: $0.00") and "this month" in \
        body["message"]


async def test_strict_mode_bounds_a_grounded_prompt_and_refuses_unbounded_queries(
        aiohttp_client: Any, sqlite_url: str, tmp_path: Path, fake: FakeAgentsProvider) -> None:
    # 30,000 micros of room. Gemini 2.5 Flash bills a grounded prompt 35 USD per 1,000
    # (35,000 micros): the tokens fit, the search does not. Gemini 3.5 Flash bills each query
    # and nothing in a request bounds how many it runs.
    models = [{"name": "gemini-2.5-flash", "provider": "google"},
              {"name": "gemini-3.5-flash", "provider": "google"}]
    keys = seed_ledger(sqlite_url, policy(users=[{"username": "alice", "limit_usd": "0.03"}],
                                          models=models), keys_for=("alice",))
    settings = limiter_settings(tmp_path, fake.base_url, google=True, enforcement="strict")
    gateway = await aiohttp_client(gateway_app(sqlite_url, settings,
                                               registry=CollectorRegistry()))
    headers = {"x-goog-api-key": keys["alice"]}

    def ask(grounded: bool) -> dict[str, Any]:
        return {"contents": [{"parts": [{"text": "who won euro 2024?"}]}],
                "generationConfig": {"maxOutputTokens": 100},
                **({"tools": [{"google_search": {}}]} if grounded else {})}

    unbounded = await gateway.post("/v1beta/models/gemini-3.5-flash:generateContent",
                                   json=ask(True), headers=headers)
    assert unbounded.status == 400
    error = (await unbounded.json())["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "unbounded web searches" in error["message"]
    path = "/v1beta/models/gemini-2.5-flash:generateContent"
    grounded = await gateway.post(path, json=ask(True), headers=headers)
    assert grounded.status == 409
    assert fake.calls == []
    plain = await gateway.post(path, json=ask(False), headers=headers)
    assert plain.status == 200
    assert len(fake.calls) == 1
