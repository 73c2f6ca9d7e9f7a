"""The real coding agents, run non-interactively against the fake provider over real HTTP.

Each client finishes its task, prints the fake's answer and makes exactly the calls recorded
here (paths, query strings, the provider headers a gateway must pass on); each acts on a tool
call in its dialect and sends the result back; and each that can stops on the limiter's refusal
and shows its message. These are the clients and set-ups the gateway is proven with; this
module proves the fake and the set-ups.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import agent_setups
from tests.support.agent_gateway import UPSTREAM_KEY, agent_gateway, cost_micros, expected_rows
from tests.support.agent_replies import ANSWER_MARK, Reply, ToolCall
from tests.support.agent_setups import Finished, run
from tests.support.fake_agents_provider import Call, FakeAgentsProvider
from tests.support.limit_refusal import limit_refusal

pytestmark = pytest.mark.slow
KEY = "sk-fake-provider-key"


def billed(fake: FakeAgentsProvider) -> list[Call]:
    return [call for call in fake.calls if call.reported is not None]


def assert_done(finished: Finished, answer: str = ANSWER_MARK) -> None:
    assert finished.code == 0, finished.stderr[-2000:]
    assert answer in finished.stdout, (finished.stdout[-2000:], finished.stderr[-2000:])


async def test_claude_code_writes_a_file_with_a_tool_and_answers(
        fake: FakeAgentsProvider, home: Path) -> None:
    note = home.parent / "work" / "note.txt"
    fake.queue(Reply(tool_call=ToolCall("Write", {"file_path": str(note),
                                                  "content": "written by claude\n"})))
    agent = agent_setups.claude_code(home, fake.base_url, KEY, "Write the note.",
                                     "claude-sonnet-4-6", "--allowedTools", "Write")
    finished = await run(agent, home.parent / "work")
    assert_done(finished)
    assert note.read_text() == "written by claude\n"
    calls = billed(fake)
    # The tool turn, then the answer after the tool result.
    assert len(calls) >= 2
    for call in calls:
        assert (call.path, call.query) == ("/v1/messages", "beta=true")
        assert call.headers["x-api-key"] == KEY
        assert call.headers["anthropic-version"] == "2023-06-01"
        assert "claude-code-20250219" in call.headers["anthropic-beta"]
        assert call.body["stream"] is True
    tool_results = [block for call in calls for message in call.body["messages"]
                    if isinstance(message["content"], list)
                    for block in message["content"] if block.get("type") == "tool_result"]
    assert tool_results


async def test_claude_code_context_only_counts_tokens(fake: FakeAgentsProvider,
                                                      home: Path) -> None:
    agent = agent_setups.claude_code(home, fake.base_url, KEY, "/context", "claude-sonnet-4-6")
    finished = await run(agent, home.parent / "work")
    assert finished.code == 0, finished.stderr[-2000:]
    assert "Context Usage" in finished.stdout
    assert fake.calls and not billed(fake)
    assert {(call.method, call.path, call.query) for call in fake.calls} == {
        ("POST", "/v1/messages/count_tokens", "beta=true")}
    assert all("anthropic-beta" in call.headers for call in fake.calls)


async def test_codex_exec_on_the_responses_api(fake: FakeAgentsProvider, home: Path) -> None:
    agent = agent_setups.codex(home, fake.base_url, KEY, "Say hello.", "gpt-5-codex")
    finished = await run(agent, home.parent / "work")
    assert_done(finished)
    assert [(call.method, call.path, call.query) for call in fake.calls] == [
        ("POST", "/v1/responses", "")]
    call = fake.calls[0]
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.body["stream"] is True and call.body["model"] == "gpt-5-codex"
    assert any(name.lower().startswith("x-codex-") for name in call.headers)


@pytest.mark.parametrize(("model", "path"), [
    ("anthropic/claude-sonnet-4-6", "/v1/messages"),
    ("openai/gpt-5-mini", "/v1/responses"),
    ("agentmeter/gpt-5-mini", "/v1/chat/completions"),
])
async def test_opencode_run_on_each_provider_kind(fake: FakeAgentsProvider, home: Path,
                                                  model: str, path: str) -> None:
    agent = agent_setups.opencode(home, fake.base_url, KEY, "Say hello.", model)
    finished = await run(agent, home.parent / "work")
    assert_done(finished)
    # The answer and a title for the session.
    assert {call.path for call in fake.calls} == {path}
    assert len(billed(fake)) == len(fake.calls) >= 1
    assert all(call.body["stream"] is True for call in fake.calls)


async def test_gemini_cli_streams_generate_content(fake: FakeAgentsProvider,
                                                   home: Path) -> None:
    agent = agent_setups.gemini_cli(home, fake.base_url, KEY, "Say hello.", "gemini-2.5-flash")
    finished = await run(agent, home.parent / "work")
    assert_done(finished)
    generations = billed(fake)
    assert generations
    for call in generations:
        assert call.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        assert call.query == "alt=sse"
        assert call.headers["x-goog-api-key"] == KEY


async def test_gemini_cli_through_the_gateway_is_recorded_to_the_micro(
        fake: FakeAgentsProvider, home: Path, pg_url: str) -> None:
    fake.queue(Reply(tool_call=TOOL_CALLS["gemini-cli"]))
    async with agent_gateway(fake, pg_url, home.parent) as gateway:
        agent = agent_setups.gemini_cli(home, gateway.base_url, gateway.key, "Look around.",
                                        "gemini-2.5-flash")
        finished = await run(agent, home.parent / "work")
        assert_done(finished)
        recorded = await gateway.recorded()
    generations = billed(fake)
    assert len(generations) >= 2  # the tool turn, then the answer with the tool's result
    for call in generations:
        assert (call.path, call.query) == (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse")
        assert call.headers["x-goog-api-key"] == UPSTREAM_KEY
        assert gateway.key not in json.dumps(dict(call.headers))
    assert sorted(recorded) == sorted((usage, cost_micros(usage)) for usage in fake.reported())


@pytest.mark.parametrize("extra", [(), ("--no-stream",)])
async def test_llm_cli(fake: FakeAgentsProvider, home: Path, extra: tuple[str, ...]) -> None:
    agent = agent_setups.llm_cli(home, fake.base_url, KEY, "Say hello.", "gpt-5-mini", *extra)
    finished = await run(agent, home.parent / "work")
    assert_done(finished)
    [call] = fake.calls
    assert call.path == "/v1/chat/completions"
    assert call.body.get("stream", False) is (not extra)


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
async def test_agents_sdk_calls_a_tool_then_answers(fake: FakeAgentsProvider, home: Path,
                                                    api: str, stream: bool) -> None:
    note = home.parent / "work" / "note.txt"
    fake.queue(Reply(tool_call=ToolCall("write_note", {"text": "written by the agent"})))
    agent = agent_setups.agents_sdk(home, fake.base_url, KEY, "Write a note.", "gpt-5-mini",
                                    api=api, stream=stream, note=note)
    finished = await run(agent, home.parent / "work")
    assert_done(finished)
    assert note.read_text() == "written by the agent"
    path = "/v1/responses" if api == "responses" else "/v1/chat/completions"
    assert [call.path for call in fake.calls] == [path, path]
    assert len(fake.reported()) == 2
    assert all(call.body.get("stream", False) is stream for call in fake.calls)


# Each agent runs a tool the fake asks for and sends the result back in the next call: the
# tool-call shapes of every dialect are ones the agents act on.
TOOL_CALLS = {
    "codex": ToolCall("exec_command", {"cmd": "echo agentmeter"}),
    "opencode-openai": ToolCall("bash", {"command": "echo agentmeter",
                                         "description": "Print a word"}),
    "opencode-anthropic": ToolCall("bash", {"command": "echo agentmeter",
                                            "description": "Print a word"}),
    "opencode-compatible": ToolCall("bash", {"command": "echo agentmeter",
                                             "description": "Print a word"}),
    "gemini-cli": ToolCall("list_directory", {"dir_path": "."}),
}


@pytest.mark.parametrize("agent", [agent for agent in agent_setups.AGENTS
                                   if agent.name in TOOL_CALLS], ids=lambda agent: agent.name)
async def test_agent_runs_the_tool_and_returns_its_result(
        fake: FakeAgentsProvider, home: Path, agent: agent_setups.Agent) -> None:
    fake.queue(Reply(tool_call=TOOL_CALLS[agent.name]))
    finished = await run(agent.make(home, fake.base_url, KEY, "Look around."), home.parent / "work")
    assert_done(finished)
    calls = billed(fake)
    # The call after the tool turn carries the tool's result (a title request may come between).
    followed = [json.dumps(call.body) for call in calls[1:]]
    result_mark = "functionResponse" if agent.dialect == "google" else "call_fake_1"
    assert any(result_mark in body for body in followed), [call.path for call in calls]


# opencode is left out: it retries a 409 silently with growing pauses (and so any refusal whose
# body contains "429", "500" or "503", such as `"spent_micros": 25000000`): bench.agent_refusals.
@pytest.mark.parametrize("agent", [agent for agent in agent_setups.AGENTS
                                   if not agent.name.startswith("opencode")],
                         ids=lambda agent: agent.name)
async def test_agent_stops_on_the_limit_refusal_and_shows_it(
        home: Path, agent: agent_setups.Agent) -> None:
    refusing = FakeAgentsProvider(default=limit_refusal(agent.dialect))
    await refusing.start()
    try:
        finished = await run(agent.make(home, refusing.base_url, KEY, "Say hello."),
                             home.parent / "work", timeout=25)
    finally:
        await refusing.close()
    assert finished.code not in (None, 0), finished
    # Claude Code shows the body's top-level `message`, the others the dialect's error message.
    assert "Chat usage limit exceeded" in finished.stdout + finished.stderr


# Through the gateway: the same clients and fake, the gateway between them ---------------------


@pytest.mark.parametrize("agent", [agent for agent in agent_setups.AGENTS
                                   if agent.name in ("codex", "opencode-openai", "agents-sdk")],
                         ids=lambda agent: agent.name)
async def test_responses_agent_through_the_gateway_is_billed_to_the_micro(
        fake: FakeAgentsProvider, home: Path, tmp_path: Path, sqlite_url: str,
        agent: agent_setups.Agent) -> None:
    fake.queue(Reply(tool_call=TOOL_CALLS.get(
        agent.name, ToolCall("write_note", {"text": "written by the agent"}))))
    async with agent_gateway(fake, sqlite_url, tmp_path) as gateway:
        finished = await run(agent.make(home, gateway.base_url, gateway.key, "Look around."),
                             home.parent / "work")
        assert_done(finished)
        assert {call.path for call in billed(fake)} == {"/v1/responses"}
        assert len(billed(fake)) >= 2  # the tool turn, then the answer
        assert await gateway.rows() == expected_rows(fake)
