"""forward() over real HTTP: a tiny app serving it on a port, the fake provider on another."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ledger.tokens import TokenUsage
from limiter.relay.registry import ROUTES
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.forward_harness import (
    ANTHROPIC_KEY,
    CLIENT_KEY,
    OPENAI_KEY,
    Harness,
    closed_port_url,
)


@pytest.fixture
async def harness(upstream: FakeUpstream) -> AsyncIterator[Harness]:
    async with Harness(upstream.base_url) as h:
        yield h


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {CLIENT_KEY}",
                                              "x-api-key": CLIENT_KEY}) as session:
        yield session


OPENAI_BODY: dict[str, Any] = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC_BODY: dict[str, Any] = {"model": "claude-x", "max_tokens": 100,
                  "messages": [{"role": "user", "content": "hi"}]}
BODIES = {"openai": OPENAI_BODY, "anthropic": ANTHROPIC_BODY}
# The first billed route of the registry with a fixed path for each kind of upstream this fake
# speaks (Gemini's, with the model in the path, are tests/integration/test_limiter_gemini.py's).
PATHS: dict[str, str] = {}
for _route in ROUTES:
    if _route.billed and _route.kind in BODIES and _route.model_param is None:
        PATHS.setdefault(_route.kind, _route.path)
USAGE = {"openai": TokenUsage(input=90, output=40, cache_read=300, cache_write=20),
         "anthropic": TokenUsage(input=90, output=40, cache_read=300, cache_write=20,
                                 cache_write_1h=10)}
PROVIDER_NAMES = list(PATHS)


def body_for(provider: str, stream: bool) -> bytes:
    return json.dumps({**BODIES[provider], "stream": stream}).encode()


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
async def test_answer_is_relayed_with_exact_usage(provider: str, harness: Harness,
                                                  upstream: FakeUpstream,
                                                  client: aiohttp.ClientSession) -> None:
    upstream.queue(Answer(text="the answer", usage=USAGE[provider], reasoning_tokens=25))
    sent = body_for(provider, False)
    async with client.post(harness.url + PATHS[provider], data=sent,
                           headers={"Content-Type": "application/json",
                                    "X-Chat-ID": "chat-1"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        answer = await response.json()
    assert "the answer" in json.dumps(answer)
    result = await harness.result()
    assert (result.status, result.usage, result.partial, result.estimated) == (
        200, USAGE[provider], False, False)
    assert result.first_byte_seconds is not None and result.upstream_seconds > 0
    assert harness.first_bytes == 1
    received = upstream.received[-1]
    assert received.raw == sent  # unchanged bodies are forwarded byte for byte
    assert CLIENT_KEY not in json.dumps(dict(received.headers))
    if provider == "openai":
        assert received.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
        assert "x-api-key" not in received.headers
    else:
        assert received.headers["x-api-key"] == ANTHROPIC_KEY
        assert "Authorization" not in received.headers
    assert "X-Chat-ID" not in received.headers


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
async def test_stream_is_relayed_with_exact_usage(provider: str, harness: Harness,
                                                  upstream: FakeUpstream,
                                                  client: aiohttp.ClientSession) -> None:
    # Small writes and CRLF line ends: events reach the parser cut at arbitrary bytes.
    upstream.queue(Answer(text="streamed words here", usage=USAGE[provider],
                               write_size=7, line_ending="\r\n"))
    async with client.post(harness.url + PATHS[provider],
                           data=body_for(provider, True)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["x-request-id"] == "req_fake"
        text = (await response.read()).decode()
    assert "streamed " in text and "words " in text
    result = await harness.result()
    assert (result.usage, result.partial, result.estimated, result.client_gone) == (
        USAGE[provider], False, False, False)
    received = upstream.received[-1].body
    if provider == "openai":
        assert received["stream_options"] == {"include_usage": True}
        assert "data: [DONE]" in text
    else:
        assert "stream_options" not in received
        assert "event: message_stop" in text


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
async def test_stream_reaches_the_client_before_the_upstream_finishes(
        provider: str, harness: Harness, upstream: FakeUpstream,
        client: aiohttp.ClientSession) -> None:
    answer = Answer(text="first then the rest", usage=USAGE[provider], pause_after=3)
    upstream.queue(answer)
    async with client.post(harness.url + PATHS[provider],
                           data=body_for(provider, True)) as response:
        first = await asyncio.wait_for(response.content.readany(), 5)
        assert first
        assert harness.results.empty()  # forward() is still relaying
        assert not answer.resume.is_set()
        answer.resume.set()
        rest = await response.read()
    assert b"rest" in first + rest
    result = await harness.result()
    assert result.usage == USAGE[provider] and not result.partial


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
async def test_client_abort_closes_the_upstream_and_returns_partial(
        provider: str, harness: Harness, upstream: FakeUpstream,
        client: aiohttp.ClientSession) -> None:
    upstream.queue(Answer(text="never finished answer", usage=USAGE[provider],
                               pause_after=5))
    async with client.post(harness.url + PATHS[provider],
                           data=body_for(provider, True)) as response:
        await asyncio.wait_for(response.content.readany(), 5)
        response.close()
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(upstream.disconnected.wait(), 2)
    assert asyncio.get_running_loop().time() - started < 1.0
    result = await harness.result()
    assert result.partial and result.client_gone and result.estimated
    assert result.usage is not None and result.usage.output >= 1
    if provider == "anthropic":
        # message_start already carried the exact input side.
        reference = USAGE[provider]
        assert (result.usage.input, result.usage.cache_read, result.usage.cache_write,
                result.usage.cache_write_1h) == (reference.input, reference.cache_read,
                                                 reference.cache_write, reference.cache_write_1h)
    else:
        assert result.usage.input > 0 and result.usage.cache_read == 0


async def test_one_client_leaving_stops_only_its_own_stream(
        harness: Harness, upstream: FakeUpstream, client: aiohttp.ClientSession) -> None:
    """Every stream is watched by the same timer: the one whose client left is stopped, the
    others it looks at run to their end with their exact usage."""
    for _ in range(3):
        upstream.queue(Answer(text="one two three four five six seven eight",
                              usage=USAGE["openai"], event_delay=0.05))

    async def whole() -> str:
        async with client.post(harness.url + PATHS["openai"],
                               data=body_for("openai", True)) as response:
            return await response.text()

    async def leaving() -> None:
        async with client.post(harness.url + PATHS["openai"],
                               data=body_for("openai", True)) as response:
            await asyncio.wait_for(response.content.readany(), 5)
            response.close()

    texts = await asyncio.gather(whole(), leaving(), whole())
    assert all("[DONE]" in text for text in (texts[0], texts[2]))
    results = [await harness.result() for _ in range(3)]
    gone = [result for result in results if result.client_gone]
    assert len(gone) == 1 and gone[0].partial
    finished = [result for result in results if not result.client_gone]
    assert [(r.partial, r.usage) for r in finished] == [(False, USAGE["openai"])] * 2


async def test_client_abort_before_the_first_token_closes_the_upstream(
        harness: Harness, upstream: FakeUpstream) -> None:
    upstream.queue(Answer(hang_seconds=30))
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(session.post(harness.url + PATHS["anthropic"],
                                                data=body_for("anthropic", True)))
        while not upstream.received:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.wait_for(upstream.disconnected.wait(), 2)
    result = await harness.result()
    assert result.status == 499 and result.partial and result.client_gone
    assert result.estimated and result.usage == TokenUsage(
        input=-(-len(body_for("anthropic", True)) // 4))


async def test_a_cancelled_handler_stops_the_stream_and_is_not_taken_for_a_client_leaving(
        harness: Harness, upstream: FakeUpstream, client: aiohttp.ClientSession) -> None:
    """The stream is relayed in the handler's own task; the client watch cancels that task
    when the client leaves and takes the cancellation back. A cancellation from anyone else
    (a shutdown) must go through: the upstream is closed and no result is made up."""
    upstream.queue(Answer(text="a long answer", usage=USAGE["openai"], pause_after=5))
    async with client.post(harness.url + PATHS["openai"],
                           data=body_for("openai", True)) as response:
        await asyncio.wait_for(response.content.readany(), 5)
        (handler,) = harness.handlers
        handler.cancel()
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        await asyncio.sleep(0.2)  # past the client watch's next look
    assert handler.cancelled()
    assert harness.results.empty()


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
@pytest.mark.parametrize("stream", [False, True])
async def test_refused_upstream_is_an_upstream_error(provider: str, stream: bool,
                                                     client: aiohttp.ClientSession) -> None:
    async with Harness(closed_port_url()) as h:
        async with client.post(h.url + PATHS[provider], data=body_for(provider, stream)) as r:
            assert r.status == 502
            assert (await r.json())["error"]["code"] == "upstream_error"
        assert h.results.empty()


@pytest.mark.parametrize("stream", [False, True])
async def test_hanging_upstream_is_an_upstream_timeout(stream: bool,
                                                       upstream: FakeUpstream,
                                                       client: aiohttp.ClientSession) -> None:
    upstream.queue(Answer(hang_seconds=10))
    async with (Harness(upstream.base_url, timeout_s=0.3) as h,
                client.post(h.url + PATHS["openai"], data=body_for("openai", stream)) as r):
        assert r.status == 504
        assert (await r.json())["error"]["code"] == "upstream_timeout"
    await asyncio.wait_for(upstream.disconnected.wait(), 2)


async def test_upstream_silent_mid_stream_past_timeout_gives_partial(
        upstream: FakeUpstream, client: aiohttp.ClientSession) -> None:
    upstream.queue(Answer(text="a b c d", usage=USAGE["anthropic"], pause_after=4))
    async with Harness(upstream.base_url, timeout_s=0.3) as h:
        async with client.post(h.url + PATHS["anthropic"],
                               data=body_for("anthropic", True)) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        result = await h.result()
    assert result.partial and result.estimated and not result.client_gone
    assert result.usage is not None and result.usage.input == USAGE["anthropic"].input
    await asyncio.wait_for(upstream.disconnected.wait(), 2)


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
async def test_upstream_dropping_mid_stream_gives_partial_with_known_usage(
        provider: str, harness: Harness, upstream: FakeUpstream,
        client: aiohttp.ClientSession) -> None:
    upstream.queue(Answer(text="one two three four five", usage=USAGE[provider],
                               drop_after=5))
    async with client.post(harness.url + PATHS[provider],
                           data=body_for(provider, True)) as response:
        assert response.status == 200
        # The client sees a broken stream, not a clean end of a cut answer.
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    result = await harness.result()
    assert result.partial and result.estimated and not result.client_gone
    assert result.usage is not None
    if provider == "anthropic":
        assert result.usage.input == USAGE[provider].input
        assert result.usage.cache_write_1h == USAGE[provider].cache_write_1h


async def test_usage_before_an_openai_drop_is_exact(harness: Harness,
                                                    upstream: FakeUpstream,
                                                    client: aiohttp.ClientSession) -> None:
    # Dropped right after the usage chunk, before [DONE]: the counts are the provider's.
    upstream.queue(Answer(text="x y", usage=USAGE["openai"], drop_after=5))
    async with client.post(harness.url + PATHS["openai"], data=body_for("openai", True)) as r:
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    result = await harness.result()
    assert result.partial and not result.estimated and result.usage == USAGE["openai"]


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
async def test_error_event_after_output_keeps_the_usage(provider: str, harness: Harness,
                                                        upstream: FakeUpstream,
                                                        client: aiohttp.ClientSession) -> None:
    upstream.queue(Answer(text="partial answer text", usage=USAGE[provider],
                               error_after=4))
    async with client.post(harness.url + PATHS[provider],
                           data=body_for(provider, True)) as response:
        assert response.status == 200
        text = (await response.read()).decode()
    assert "fake" in text and "mid-stream" in text
    result = await harness.result()
    assert result.partial and result.error is not None and result.usage is not None
    assert result.usage.output >= 1
    if provider == "anthropic":
        assert result.usage.input == USAGE[provider].input


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
@pytest.mark.parametrize("stream", [False, True])
async def test_error_answer_is_relayed_and_keeps_its_usage(provider: str, stream: bool,
                                                           harness: Harness,
                                                           upstream: FakeUpstream,
                                                           client: aiohttp.ClientSession) -> None:
    upstream.queue(Answer(status=500, usage=USAGE[provider], usage_on_error=True),
                        Answer(status=429))
    async with client.post(harness.url + PATHS[provider], data=body_for(provider, stream)) as r:
        assert r.status == 500
        assert "fake failure" in json.dumps(await r.json())
    with_usage = await harness.result()
    assert (with_usage.status, with_usage.usage, with_usage.estimated) == (
        500, USAGE[provider], False)
    assert with_usage.error is not None and not with_usage.partial
    async with client.post(harness.url + PATHS[provider], data=body_for(provider, stream)) as r:
        assert r.status == 429
    without = await harness.result()
    assert (without.status, without.usage, without.estimated) == (429, None, False)


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
@pytest.mark.parametrize("stream", [False, True])
async def test_answer_without_counts_is_estimated(provider: str, stream: bool, harness: Harness,
                                                  upstream: FakeUpstream,
                                                  client: aiohttp.ClientSession) -> None:
    upstream.queue(Answer(text="x" * 400, omit_usage=True))
    async with client.post(harness.url + PATHS[provider], data=body_for(provider, stream)) as r:
        assert r.status == 200
        await r.read()
    result = await harness.result()
    assert result.estimated and not result.partial and result.usage is not None
    assert result.usage.input > 0 and result.usage.output >= 100


async def test_query_string_is_forwarded(harness: Harness, upstream: FakeUpstream,
                                         client: aiohttp.ClientSession) -> None:
    async with client.post(harness.url + PATHS["anthropic"] + "?beta=true",
                           data=body_for("anthropic", False)) as r:
        assert r.status == 200
    await harness.result()
    assert upstream.received[-1].path == "/v1/messages"


# The headers the agents sent the fake provider (tests/e2e/test_agent_clis.py), as they sent
# them, credentials left out (plus `OpenAI-Beta`, which OpenAI's SDKs send to beta APIs): each
# must reach the provider unchanged through the gateway.
CLAUDE_CODE_HEADERS = {
    "Accept": "application/json", "User-Agent": "claude-cli/2.1.332 (external, sdk-cli)",
    "X-Claude-Code-Session-Id": "01becc34-667c-42e0-8323-9fb0cc6babdb",
    "X-Stainless-Arch": "x64", "X-Stainless-Lang": "js", "X-Stainless-OS": "Linux",
    "X-Stainless-Package-Version": "0.128.0", "X-Stainless-Retry-Count": "0",
    "X-Stainless-Runtime": "node", "X-Stainless-Runtime-Version": "v26.12.1",
    "X-Stainless-Timeout": "600",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
                      "context-management-2025-06-27",
    "anthropic-dangerous-direct-browser-access": "true", "anthropic-version": "2023-06-01",
    "x-app": "cli",
}
CODEX_HEADERS = {
    "x-codex-beta-features": "remote_compaction_v2",
    "x-codex-window-id": "01a24d58-a861-7d02-898a-048552353894:0",
    "x-codex-turn-metadata": '{"installation_id":"0627ab5d-169c-405a-86d1-ffb6d3c72304"}',
    "x-client-request-id": "01a24d58-a861-7d02-898a-048552353894",
    "session-id": "01a24d58-a861-7d02-898a-048552353894",
    "thread-id": "01a24d58-a861-7d02-898a-048552353894", "Accept": "text/event-stream",
    "originator": "codex_exec",
    "User-Agent": "codex_exec/0.171.0 (Debian 12.0.0; x86_64) unknown (codex_exec; 0.171.0)",
}
OPENAI_SDK_HEADERS = {
    "Accept": "application/json", "User-Agent": "Agents/Python 0.24.0", "OpenAI-Beta":
    "assistants=v2", "x-stainless-lang": "python", "x-stainless-package-version": "3.63.0",
    "x-stainless-async": "async:asyncio", "x-stainless-raw-response": "stream",
    "x-stainless-retry-count": "0", "x-stainless-read-timeout": "600",
}
OPENCODE_HEADERS = {
    "User-Agent": "opencode/1.18.33 ai-sdk/provider-utils/4.0.46 runtime/bun/1.3.14",
    "anthropic-version": "2023-06-01", "x-session-affinity": "ses_db2a6f470ffeQ0mGSavTpkbS77",
    "x-session-id": "ses_db2a6f470ffeQ0mGSavTpkbS77", "Accept": "*/*",
}


@pytest.mark.parametrize(("provider", "query", "headers"), [
    ("anthropic", "?beta=true", CLAUDE_CODE_HEADERS),
    ("openai", "", CODEX_HEADERS),
    ("openai", "", OPENAI_SDK_HEADERS),
    ("anthropic", "", OPENCODE_HEADERS),
], ids=["claude-code", "codex", "openai-sdks", "opencode"])
async def test_agents_query_and_provider_headers_reach_the_upstream(
        harness: Harness, upstream: FakeUpstream, provider: str, query: str,
        headers: dict[str, str]) -> None:
    credential = ({"x-api-key": CLIENT_KEY} if provider == "anthropic"
                  else {"Authorization": f"Bearer {CLIENT_KEY}"})
    async with aiohttp.ClientSession() as session, session.post(
            harness.url + PATHS[provider] + query, data=body_for(provider, False),
            headers={**headers, **credential, "Content-Type": "application/json"}) as r:
        assert r.status == 200
    await harness.result()
    received = upstream.received[-1]
    assert received.raw_path == PATHS[provider] + query
    assert {name: received.headers.get(name) for name in headers} == headers
    assert CLIENT_KEY not in str(received.headers)


async def test_compressed_answer_is_relayed_decompressed_with_its_own_framing(
        harness: Harness, upstream: FakeUpstream,
        client: aiohttp.ClientSession) -> None:
    text = "compressible " * 500
    upstream.queue(Answer(text=text, usage=USAGE["openai"], compress=True))
    async with client.post(harness.url + PATHS["openai"], data=body_for("openai", False),
                           headers={"Accept-Encoding": "identity"}) as r:
        assert r.status == 200
        assert "Content-Encoding" not in r.headers
        raw = await r.read()
        assert int(r.headers["Content-Length"]) == len(raw)
    assert json.loads(raw)["choices"][0]["message"]["content"] == text
    assert (await harness.result()).usage == USAGE["openai"]
    # The client's Accept-Encoding is not passed on; the upstream client asks for what it reads.
    assert "gzip" in upstream.received[-1].headers["Accept-Encoding"]
