"""The official SDKs as clients of forward(): right content, exact usage, provider key only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from ledger.tokens import TokenUsage
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.forward_harness import (
    ANTHROPIC_KEY,
    CLIENT_KEY,
    OPENAI_KEY,
    Harness,
    closed_port_url,
)

TEXT = "Caching saves money when prompts repeat."
OPENAI_USAGE = TokenUsage(input=150, output=420, cache_read=1024, cache_write=64)
ANTHROPIC_USAGE = TokenUsage(input=25, output=420, cache_read=9000, cache_write=300,
                             cache_write_1h=700)
QUESTION = "Why cache prompts?"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]
CLAUDE_MESSAGES: list[MessageParam] = [{"role": "user", "content": QUESTION}]


@pytest.fixture
async def harness(upstream: FakeUpstream) -> AsyncIterator[Harness]:
    async with Harness(upstream.base_url) as h:
        yield h


@pytest.fixture
async def openai_client(harness: Harness) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=harness.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def anthropic_client(harness: Harness) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=harness.url, api_key=CLIENT_KEY, max_retries=0)
    yield client
    await client.close()


def assert_provider_key_only(fake: FakeUpstream, header: str, value: str) -> None:
    received = fake.received[-1].headers
    assert received[header] == value
    assert all(CLIENT_KEY not in v for v in received.values())


async def test_openai_completion(openai_client: openai.AsyncOpenAI, harness: Harness,
                                 upstream: FakeUpstream) -> None:
    upstream.queue(Answer(text=TEXT, usage=OPENAI_USAGE, reasoning_tokens=300))
    completion = await openai_client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    assert completion.choices[0].message.content == TEXT
    assert completion.usage is not None and completion.usage.completion_tokens == 420
    result = await harness.result()
    assert result.usage == OPENAI_USAGE and not result.estimated and not result.partial
    assert_provider_key_only(upstream, "Authorization", f"Bearer {OPENAI_KEY}")


async def test_openai_stream(openai_client: openai.AsyncOpenAI, harness: Harness,
                             upstream: FakeUpstream) -> None:
    upstream.queue(Answer(text=TEXT, usage=OPENAI_USAGE, reasoning_tokens=300))
    stream = await openai_client.chat.completions.create(model="gpt-5", messages=MESSAGES,
                                                         stream=True)
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(parts) == TEXT
    result = await harness.result()
    assert result.usage == OPENAI_USAGE and not result.estimated and not result.partial
    # The client did not ask for usage; the limiter did.
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}
    assert_provider_key_only(upstream, "Authorization", f"Bearer {OPENAI_KEY}")


async def test_openai_stream_arrives_before_the_upstream_finishes(
        openai_client: openai.AsyncOpenAI, harness: Harness,
        upstream: FakeUpstream) -> None:
    answer = Answer(text=TEXT, usage=OPENAI_USAGE, pause_after=2)
    upstream.queue(answer)
    stream = await openai_client.chat.completions.create(model="gpt-5", messages=MESSAGES,
                                                         stream=True)
    chunks = aiter(stream)
    first = await asyncio.wait_for(anext(chunks), 5)
    assert first.choices[0].delta.role == "assistant"
    assert harness.results.empty() and not answer.resume.is_set()
    answer.resume.set()
    rest = [c.choices[0].delta.content or "" async for c in chunks if c.choices]
    assert "".join(rest) == TEXT
    assert (await harness.result()).usage == OPENAI_USAGE


async def test_openai_stream_abort_stops_the_upstream(openai_client: openai.AsyncOpenAI,
                                                      harness: Harness,
                                                      upstream: FakeUpstream) -> None:
    upstream.queue(Answer(text=TEXT, usage=OPENAI_USAGE, pause_after=4))
    stream = await openai_client.chat.completions.create(model="gpt-5", messages=MESSAGES,
                                                         stream=True)
    chunks = aiter(stream)
    await anext(chunks)
    await anext(chunks)
    await stream.close()
    await asyncio.wait_for(upstream.disconnected.wait(), 2)
    result = await harness.result()
    assert result.partial and result.client_gone and result.estimated
    assert result.usage is not None and result.usage.input > 0 and result.usage.output >= 1


async def test_openai_sdk_sees_upstream_errors(openai_client: openai.AsyncOpenAI,
                                               upstream: FakeUpstream) -> None:
    upstream.queue(Answer(status=500))
    with pytest.raises(openai.InternalServerError):
        await openai_client.chat.completions.create(model="gpt-5", messages=MESSAGES)


async def test_openai_sdk_sees_502_when_upstream_refuses() -> None:
    async with Harness(closed_port_url()) as h:
        client = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)
        await client.close()
    assert caught.value.status_code == 502


async def test_anthropic_message(anthropic_client: anthropic.AsyncAnthropic, harness: Harness,
                                 upstream: FakeUpstream) -> None:
    upstream.queue(Answer(text=TEXT, usage=ANTHROPIC_USAGE))
    message = await anthropic_client.messages.create(model="claude-sonnet-4-6", max_tokens=1024,
                                                     messages=CLAUDE_MESSAGES)
    assert message.content[0].text == TEXT  # type: ignore[union-attr]
    assert message.usage.cache_creation_input_tokens == 1000
    result = await harness.result()
    assert result.usage == ANTHROPIC_USAGE and not result.estimated and not result.partial
    assert_provider_key_only(upstream, "x-api-key", ANTHROPIC_KEY)
    assert upstream.received[-1].headers["anthropic-version"]


async def test_anthropic_stream(anthropic_client: anthropic.AsyncAnthropic, harness: Harness,
                                upstream: FakeUpstream) -> None:
    upstream.queue(Answer(text=TEXT, usage=ANTHROPIC_USAGE))
    async with anthropic_client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=1024,
            messages=CLAUDE_MESSAGES) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == TEXT
    assert final.usage.output_tokens == 420 and final.usage.input_tokens == 25
    result = await harness.result()
    assert result.usage == ANTHROPIC_USAGE and not result.estimated and not result.partial
    assert_provider_key_only(upstream, "x-api-key", ANTHROPIC_KEY)


async def test_anthropic_stream_arrives_before_the_upstream_finishes(
        anthropic_client: anthropic.AsyncAnthropic, harness: Harness,
        upstream: FakeUpstream) -> None:
    answer = Answer(text=TEXT, usage=ANTHROPIC_USAGE, pause_after=4)
    upstream.queue(answer)
    stream = await anthropic_client.messages.create(
        model="claude-sonnet-4-6", max_tokens=1024, messages=CLAUDE_MESSAGES,
        stream=True)
    events = aiter(stream)
    first = await asyncio.wait_for(anext(events), 5)
    assert first.type == "message_start"
    assert harness.results.empty() and not answer.resume.is_set()
    answer.resume.set()
    kinds = [event.type async for event in events]
    assert kinds[-1] == "message_stop"
    assert (await harness.result()).usage == ANTHROPIC_USAGE


async def test_anthropic_stream_abort_keeps_exact_input_side(
        anthropic_client: anthropic.AsyncAnthropic, harness: Harness,
        upstream: FakeUpstream) -> None:
    upstream.queue(Answer(text=TEXT, usage=ANTHROPIC_USAGE, pause_after=5))
    stream = await anthropic_client.messages.create(
        model="claude-sonnet-4-6", max_tokens=1024, messages=CLAUDE_MESSAGES,
        stream=True)
    events = aiter(stream)
    for _ in range(4):
        await anext(events)
    await stream.close()
    await asyncio.wait_for(upstream.disconnected.wait(), 2)
    result = await harness.result()
    assert result.partial and result.client_gone and result.estimated
    assert result.usage is not None
    assert (result.usage.input, result.usage.cache_read, result.usage.cache_write,
            result.usage.cache_write_1h) == (25, 9000, 300, 700)
    assert result.usage.output >= 1


async def test_anthropic_sdk_sees_a_mid_stream_error_event(
        anthropic_client: anthropic.AsyncAnthropic, harness: Harness,
        upstream: FakeUpstream) -> None:
    upstream.queue(Answer(text=TEXT, usage=ANTHROPIC_USAGE, error_after=5))
    stream = await anthropic_client.messages.create(
        model="claude-sonnet-4-6", max_tokens=1024, messages=CLAUDE_MESSAGES,
        stream=True)
    with pytest.raises(anthropic.APIStatusError, match="overload"):
        async for _ in stream:
            pass
    result = await harness.result()
    assert result.partial and result.error is not None
    assert result.usage is not None and result.usage.input == 25


async def test_openai_sdk_sees_a_dropped_stream_as_an_error(
        openai_client: openai.AsyncOpenAI, harness: Harness,
        upstream: FakeUpstream) -> None:
    upstream.queue(Answer(text=TEXT, usage=OPENAI_USAGE, drop_after=4))
    stream = await openai_client.chat.completions.create(model="gpt-5", messages=MESSAGES,
                                                         stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass
    result = await harness.result()
    assert result.partial and result.estimated and not result.client_gone


async def test_anthropic_sdk_sees_504_when_upstream_hangs(
        upstream: FakeUpstream) -> None:
    upstream.queue(Answer(hang_seconds=10))
    async with Harness(upstream.base_url, timeout_s=0.3) as h:
        client = anthropic.AsyncAnthropic(base_url=h.url, api_key=CLIENT_KEY, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                                         messages=CLAUDE_MESSAGES)
        await client.close()
    assert caught.value.status_code == 504
