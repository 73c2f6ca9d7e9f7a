"""The official SDKs parse the fake provider's answers: OpenAI's Responses API (plain, streamed,
tool calls and the unbilled retrieve/delete/cancel/input-items/input-tokens routes), Anthropic's
`count_tokens`, model list and streamed tool use, and the Gemini API through `google-genai`.
The raw streams also read back through the limiter's usage parsers to the usage the fake
reported, so fake, SDKs and parsers agree on the shapes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from ledger.tokens import TokenUsage
from limiter.relay.dialects.gemini import GeminiArrayStreamParser, GeminiStreamParser
from limiter.relay.dialects.openai_responses import ResponsesStreamParser
from limiter.relay.sse import StreamUsageParser
from tests.support.agent_replies import Reply, ToolCall
from tests.support.fake_agents_provider import FakeAgentsProvider

# google-genai subclasses aiohttp's ClientSession when it opens its async client.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
USAGE = TokenUsage(input=730, output=95, cache_read=1024)
REPLY = Reply(text="Paris is the capital of France.", usage=USAGE, reasoning_tokens=40,
              service_tier="flex", web_searches=1)
KEY = "sk-fake"
CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}},
               "required": ["city"], "additionalProperties": False}
COMMAND_SCHEMA: dict[str, object] = {
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAgentsProvider]:
    async with FakeAgentsProvider(default=REPLY) as provider:
        yield provider


@pytest.fixture
async def openai_client(fake: FakeAgentsProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{fake.base_url}/v1", api_key=KEY,
                                  max_retries=0) as client:
        yield client


@pytest.fixture
async def anthropic_client(
        fake: FakeAgentsProvider) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key=KEY,
                                        max_retries=0) as client:
        yield client


@pytest.fixture
async def gemini(fake: FakeAgentsProvider) -> AsyncIterator[Callable[[str], genai.Client]]:
    """google-genai clients on an API version (`v1beta`, its default, or `v1`), closed after."""
    clients: list[genai.Client] = []

    def make(api_version: str = "v1beta") -> genai.Client:
        clients.append(genai.Client(api_key=KEY, http_options=genai_types.HttpOptions(
            base_url=fake.base_url, api_version=api_version)))
        return clients[-1]

    yield make
    for client in clients:
        await client.aio.aclose()
        client.close()


# OpenAI Responses ------------------------------------------------------------------------------


async def test_responses_create_plain(openai_client: openai.AsyncOpenAI) -> None:
    response = await openai_client.responses.create(model="gpt-5", input="Capital of France?")
    assert response.output_text == REPLY.text
    assert response.service_tier == "flex"
    assert [item.type for item in response.output] == ["reasoning", "web_search_call",
                                                       "message"]
    assert response.usage is not None
    assert response.usage.input_tokens == USAGE.input + USAGE.cache_read
    assert response.usage.input_tokens_details.cached_tokens == USAGE.cache_read
    assert response.usage.output_tokens_details.reasoning_tokens == 40


async def test_responses_stream_events_and_final_response(
        openai_client: openai.AsyncOpenAI) -> None:
    stream = await openai_client.responses.create(model="gpt-5", input="hi", stream=True)
    kinds, text = [], ""
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
    assert text == REPLY.text
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    async with openai_client.responses.stream(model="gpt-5", input="hi") as helper:
        final = await helper.get_final_response()
    assert final.output_text == REPLY.text and final.usage is not None
    assert final.usage.output_tokens == USAGE.output


async def test_responses_function_call(fake: FakeAgentsProvider,
                                       openai_client: openai.AsyncOpenAI) -> None:
    call = ToolCall("get_weather", {"city": "Paris"})
    fake.queue(Reply(tool_call=call), Reply(tool_call=call))
    tools: list[Any] = [{"type": "function", "name": "get_weather", "strict": True,
                         "parameters": CITY_SCHEMA}]
    response = await openai_client.responses.create(model="gpt-5", input="Weather?",
                                                    tools=tools)
    [function_call] = [item for item in response.output if item.type == "function_call"]
    assert function_call.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(function_call.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    async with openai_client.responses.stream(model="gpt-5", input="Weather?",
                                              tools=tools) as stream:
        final = await stream.get_final_response()
    assert [item.type for item in final.output][-1] == "function_call"


async def test_responses_side_routes(fake: FakeAgentsProvider,
                                     openai_client: openai.AsyncOpenAI) -> None:
    created = await openai_client.responses.create(model="gpt-5", input="remember me")
    again = await openai_client.responses.retrieve(created.id)
    assert again.id == created.id and again.output_text == REPLY.text
    items = [item async for item in openai_client.responses.input_items.list(created.id)]
    assert len(items) == 1 and items[0].type == "message"
    cancelled = await openai_client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    counted = await openai_client.responses.input_tokens.count(model="gpt-5", input="hi there")
    assert counted.input_tokens > 0
    await openai_client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await openai_client.responses.retrieve(created.id)
    # Only the create call was billed.
    assert fake.reported() == [USAGE]


async def test_openai_model_list(openai_client: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in openai_client.models.list()]
    assert models == ["gpt-5-codex", "gpt-5-mini"]


# Anthropic -------------------------------------------------------------------------------------


async def test_anthropic_count_tokens_is_not_billed(
        fake: FakeAgentsProvider, anthropic_client: anthropic.AsyncAnthropic) -> None:
    counted = await anthropic_client.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Hello there"}])
    assert counted.input_tokens > 0
    assert fake.reported() == []


async def test_anthropic_model_list_in_anthropic_shape(
        anthropic_client: anthropic.AsyncAnthropic) -> None:
    models = [model async for model in anthropic_client.models.list()]
    assert [(model.type, model.id) for model in models] == [
        ("model", "claude-sonnet-4-6"), ("model", "claude-haiku-4-5")]


async def test_anthropic_streamed_tool_use(fake: FakeAgentsProvider,
                                           anthropic_client: anthropic.AsyncAnthropic) -> None:
    fake.queue(Reply(tool_call=ToolCall("bash", {"command": "echo hi"}), usage=USAGE))
    async with anthropic_client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=100,
            tools=[{"name": "bash", "input_schema": COMMAND_SCHEMA}],
            messages=[{"role": "user", "content": "Run it"}]) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use" and block.input == {"command": "echo hi"}
    assert message.usage.cache_read_input_tokens == USAGE.cache_read
    assert message.usage.output_tokens == USAGE.output


# Gemini ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
async def test_gemini_generate_content(fake: FakeAgentsProvider,
                                       gemini: Callable[[str], genai.Client],
                                       api_version: str) -> None:
    client = gemini(api_version)
    answer = await client.aio.models.generate_content(model="gemini-2.5-pro",
                                                      contents="Capital of France?")
    assert answer.text == REPLY.text
    usage = answer.usage_metadata
    assert usage is not None
    assert usage.cached_content_token_count == USAGE.cache_read
    assert usage.thoughts_token_count == REPLY.reasoning_tokens
    assert fake.calls[-1].path == f"/{api_version}/models/gemini-2.5-pro:generateContent"
    assert fake.calls[-1].headers["x-goog-api-key"] == KEY


async def test_gemini_stream_count_tokens_and_models(
        fake: FakeAgentsProvider, gemini: Callable[[str], genai.Client]) -> None:
    client = gemini("v1beta")
    chunks = [chunk async for chunk in await client.aio.models.generate_content_stream(
        model="gemini-2.5-pro", contents="Capital of France?")]
    assert "".join(chunk.text or "" for chunk in chunks) == REPLY.text
    assert len(chunks) > 1 and chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.candidates_token_count == USAGE.output - 40
    assert (fake.calls[-1].path, fake.calls[-1].query) == (
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "alt=sse")
    counted = await client.aio.models.count_tokens(model="gemini-2.5-pro", contents="hello")
    assert counted.total_tokens is not None and counted.total_tokens > 0
    names = [model.name async for model in await client.aio.models.list()]
    assert names == ["models/gemini-2.5-pro", "models/gemini-2.5-flash"]
    assert fake.reported() == [USAGE]


async def test_gemini_function_call(fake: FakeAgentsProvider,
                                    gemini: Callable[[str], genai.Client]) -> None:
    fake.queue(Reply(tool_call=ToolCall("run_shell_command", {"command": "ls"})))
    declaration = genai_types.FunctionDeclaration(name="run_shell_command",
                                                  parameters_json_schema=COMMAND_SCHEMA)
    answer = await gemini("v1beta").aio.models.generate_content(
        model="gemini-2.5-pro", contents="List files",
        config=genai_types.GenerateContentConfig(
            tools=[genai_types.Tool(function_declarations=[declaration])]))
    assert answer.function_calls is not None
    [call] = answer.function_calls
    assert (call.name, call.args) == ("run_shell_command", {"command": "ls"})


# The wire, read by the limiter's parsers ------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "parser"), [
    ("/v1/responses", {"model": "gpt-5", "input": "hi", "stream": True},
     ResponsesStreamParser),
    ("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", {"contents": []},
     GeminiStreamParser),
    ("/v1beta/models/gemini-2.5-pro:streamGenerateContent", {"contents": []},
     GeminiArrayStreamParser),
])
async def test_raw_streams_read_back_to_the_reported_usage(
        fake: FakeAgentsProvider, path: str, body: dict[str, object],
        parser: type[StreamUsageParser]) -> None:
    reader = parser()
    async with aiohttp.ClientSession() as session, \
            session.post(fake.base_url + path, json=body) as answer:
        assert answer.status == 200
        async for chunk in answer.content.iter_any():
            reader.feed(chunk)
    reader.close()
    assert reader.complete and reader.usage == fake.reported()[-1] == USAGE
