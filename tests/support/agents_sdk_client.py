"""A small agent built on the OpenAI Agents SDK, run as a program by the agent tests.

It runs in the agents' own virtualenv (`agent_clis.py` installs `openai-agents` there, apart from
the project's), so it imports nothing from agentmeter. The agent has one function tool that
writes a note to a file; a fake provider that answers first with a call to it and then with text
makes the agent complete a two-turn task. Usage: `python agents_sdk_client.py BASE_URL API_KEY
MODEL NOTE_FILE {responses,chat} {stream,plain} PROMPT`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


async def main(argv: list[str]) -> None:
    from agents import (  # type: ignore[import-not-found]
        Agent,
        Runner,
        function_tool,
        set_default_openai_api,
        set_default_openai_client,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    base_url, api_key, model, note_file, api, mode, prompt = argv
    set_tracing_disabled(True)
    set_default_openai_client(AsyncOpenAI(base_url=base_url, api_key=api_key))
    set_default_openai_api("chat_completions" if api == "chat" else "responses")

    @function_tool
    def write_note(text: str) -> str:
        """Write a note to the note file."""
        Path(note_file).write_text(text)
        return "written"

    agent = Agent(name="note-taker", instructions="Write notes when asked.", model=model,
                  tools=[write_note])
    if mode == "stream":
        result = Runner.run_streamed(agent, prompt)
        async for _ in result.stream_events():
            pass
    else:
        result = await Runner.run(agent, prompt)
    print(result.final_output)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
