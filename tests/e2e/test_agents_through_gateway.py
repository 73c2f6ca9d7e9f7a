"""The real coding agents through the limiter, in front of the same fake provider they are
proven with directly (`test_agent_clis.py`).

Each finishes its task with the gateway between it and the provider; the ledger's rows equal
what the fake reported, token for token and priced to the micro by hand; the provider sees the
gateway's key, never the user's, and the client's own query string and provider headers. Over
the limit each stops within 25 s showing the limiter's sentence, on the status it stops on
(README, "Coding agents").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support import agent_setups
from tests.support.agent_gateway import UPSTREAM_KEY, AgentGateway, agent_gateway, cost_micros
from tests.support.agent_replies import ANSWER_MARK, Reply, ToolCall
from tests.support.agent_setups import AgentRun, Finished, run
from tests.support.fake_agents_provider import FakeAgentsProvider

pytestmark = pytest.mark.slow
LIMIT_USD = 20  # no "429", "500" or "503" in the refusal's numbers: opencode scans for them
REFUSAL = ("Chat usage limit exceeded: $20.00 of $20.00 this month; resets ")
STOP_SECONDS = 25


@pytest.fixture
async def gateway(fake: FakeAgentsProvider, sqlite_url: str,
                  tmp_path: Path) -> AsyncIterator[AgentGateway]:
    async with agent_gateway(fake, sqlite_url, tmp_path) as running:
        yield running


def assert_done(finished: Finished) -> None:
    assert finished.code == 0, (finished.stdout[-2000:], finished.stderr[-2000:])
    assert ANSWER_MARK in finished.stdout, (finished.stdout[-2000:], finished.stderr[-2000:])


async def assert_ledger_matches_the_fake(gateway: AgentGateway,
                                         fake: FakeAgentsProvider) -> None:
    """One ledger row per billed answer: the fake's tokens, priced by hand."""
    expected = sorted((call.body["model"], call.reported, cost_micros(call.reported))
                      for call in fake.calls if call.reported is not None)
    assert expected
    assert sorted(await gateway.ledger_rows()) == expected
    for call in fake.calls:  # the gateway's key went upstream, never the user's
        assert gateway.key not in str(call.headers)
        assert UPSTREAM_KEY in call.headers.get("x-api-key", call.headers.get("authorization",
                                                                                  ""))


async def test_claude_code_runs_a_tool_through_the_gateway(
        fake: FakeAgentsProvider, gateway: AgentGateway, home: Path) -> None:
    note = home.parent / "work" / "note.txt"
    fake.queue(Reply(tool_call=ToolCall("Write", {"file_path": str(note),
                                                  "content": "written by claude\n"})))
    agent = agent_setups.claude_code(home, gateway.base_url, gateway.key, "Write the note.",
                                     "claude-sonnet-4-6", "--allowedTools", "Write")
    assert_done(await run(agent, home.parent / "work"))
    assert note.read_text() == "written by claude\n"
    messages = [call for call in fake.calls if call.path == "/v1/messages"]
    assert len(messages) >= 2
    for call in messages:  # Claude Code's query string and headers reached the provider
        assert call.query == "beta=true"
        assert call.headers["anthropic-version"] == "2023-06-01"
        assert "claude-code-20250219" in call.headers["anthropic-beta"]
    await assert_ledger_matches_the_fake(gateway, fake)


async def test_claude_code_context_bills_nothing(fake: FakeAgentsProvider,
                                                 gateway: AgentGateway, home: Path) -> None:
    agent = agent_setups.claude_code(home, gateway.base_url, gateway.key, "/context",
                                     "claude-sonnet-4-6")
    finished = await run(agent, home.parent / "work")
    assert finished.code == 0, finished.stderr[-2000:]
    assert "Context Usage" in finished.stdout
    assert {(call.path, call.query) for call in fake.calls} == {
        ("/v1/messages/count_tokens", "beta=true")}
    assert await gateway.ledger_rows() == []


def _llm(home: Path, gateway: AgentGateway) -> AgentRun:
    return agent_setups.llm_cli(home, gateway.base_url, gateway.key, "Say hello.", "gpt-5-mini")


def _agents_sdk_chat(home: Path, gateway: AgentGateway) -> AgentRun:
    return agent_setups.agents_sdk(home, gateway.base_url, gateway.key, "Write a note.",
                                   "gpt-5-mini", api="chat", stream=True,
                                   note=home.parent / "work" / "note.txt")


def _opencode(model: str) -> Callable[[Path, AgentGateway], AgentRun]:
    return lambda home, gateway: agent_setups.opencode(home, gateway.base_url, gateway.key,
                                                       "Say hello.", model)


# (name, how to run it, the path it calls)
CLIENTS = [
    ("llm", _llm, "/v1/chat/completions"),
    ("agents-sdk-chat", _agents_sdk_chat, "/v1/chat/completions"),
    ("opencode-anthropic", _opencode("anthropic/claude-sonnet-4-6"), "/v1/messages"),
    ("opencode-compatible", _opencode("agentmeter/gpt-5-mini"), "/v1/chat/completions"),
]


@pytest.mark.parametrize(("name", "make", "path"), CLIENTS, ids=[c[0] for c in CLIENTS])
async def test_client_completes_through_the_gateway(
        fake: FakeAgentsProvider, gateway: AgentGateway, home: Path, name: str,
        make: Callable[[Path, AgentGateway], AgentRun], path: str) -> None:
    if name == "agents-sdk-chat":
        fake.queue(Reply(tool_call=ToolCall("write_note", {"text": "written by the agent"})))
    assert_done(await run(make(home, gateway), home.parent / "work"))
    assert {call.path for call in fake.calls} == {path}
    if name == "agents-sdk-chat":
        assert (home.parent / "work" / "note.txt").read_text() == "written by the agent"
    await assert_ledger_matches_the_fake(gateway, fake)


def _claude(home: Path, gateway: AgentGateway) -> AgentRun:
    return agent_setups.claude_code(home, gateway.base_url, gateway.key, "Say hello.",
                                    "claude-sonnet-4-6")


def _codex(home: Path, gateway: AgentGateway) -> AgentRun:
    return agent_setups.codex(home, gateway.base_url, gateway.key, "Say hello.", "gpt-5-codex")


def _gemini_cli(home: Path, gateway: AgentGateway) -> AgentRun:
    return agent_setups.gemini_cli(home, gateway.base_url, gateway.key, "Say hello.",
                                   "gemini-2.5-flash")


def _agents_sdk_responses(home: Path, gateway: AgentGateway) -> AgentRun:
    return agent_setups.agents_sdk(home, gateway.base_url, gateway.key, "Write a note.",
                                   "gpt-5-mini", api="responses", stream=True,
                                   note=home.parent / "work" / "note.txt")


# (name, how to run it, the refusal status it stops on): opencode retries a 409 silently;
# Codex stops on one after its five quick retries.
REFUSED = [
    ("claude-code", _claude, 409),
    ("codex", _codex, 409),
    ("gemini-cli", _gemini_cli, 409),
    ("llm", _llm, 409),
    ("agents-sdk-chat", _agents_sdk_chat, 409),
    ("agents-sdk-responses", _agents_sdk_responses, 409),
    ("opencode-anthropic", _opencode("anthropic/claude-sonnet-4-6"), 403),
    ("opencode-openai", _opencode("openai/gpt-5-mini"), 403),
    ("opencode-compatible", _opencode("agentmeter/gpt-5-mini"), 403),
]


@pytest.mark.parametrize(("name", "make", "status"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_client_over_the_limit_stops_and_shows_the_refusal(
        fake: FakeAgentsProvider, sqlite_url: str, tmp_path: Path, home: Path, name: str,
        make: Callable[[Path, AgentGateway], AgentRun], status: int) -> None:
    async with agent_gateway(fake, sqlite_url, tmp_path, limit_usd=LIMIT_USD,
                             spent_to_limit=True, limit_exceeded_status=status) as gateway:
        finished = await run(make(home, gateway), home.parent / "work",
                             timeout=STOP_SECONDS)
        assert finished.code not in (None, 0), finished
        assert REFUSAL in finished.stdout + finished.stderr, finished
        assert fake.reported() == []  # nothing reached the provider's billed routes
        assert len(await gateway.ledger_rows()) == 1  # only the spend seeded before
