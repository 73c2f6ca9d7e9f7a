"""What each real coding agent does when every call is refused as over the limit.

For each client set-up (tests/support/agent_setups.py) and each refusal — 409 with and without
`Retry-After`, 402, 403, 429 — a fake provider answers every model call with the limiter's
refusal (tests/support/limit_refusal.py: `x-should-retry: false`, the seed's fields and the
dialect's error object) and the client is run non-interactively with a deadline. Printed per
run: whether it stopped before the deadline, its exit code, the seconds it took, how many calls
it made and whether it showed the refusal's message. The README's table of which client stops on
which status comes from here.

    .venv/bin/python -m bench.agent_refusals [--deadline 25] [--agents codex,llm]
        [--retry-after 3600]

The clients must be installed first: `python -m tests.support.agent_clis`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from tests.support.agent_setups import AGENTS, run
from tests.support.fake_agents_provider import FakeAgentsProvider
from tests.support.limit_refusal import MESSAGE, limit_refusal

KEY = "sk-fake-provider-key"


async def one(agent_name: str, status: int, retry_after: int | None,
              deadline: float) -> str:
    [agent] = [agent for agent in AGENTS if agent.name == agent_name]
    fake = FakeAgentsProvider(default=limit_refusal(agent.dialect, status, retry_after))
    await fake.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            finished = await run(agent.make(home, fake.base_url, KEY, "Say hello."), home,
                                 deadline)
    finally:
        await fake.close()
    model_calls = sum(1 for call in fake.calls if call.method == "POST"
                      and "count_tokens" not in call.path and "countTokens" not in call.path)
    shown = MESSAGE in finished.stdout or MESSAGE in finished.stderr
    stopped = "stopped" if finished.code is not None else "still running"
    scenario = f"{status}" + (f" Retry-After: {retry_after}" if retry_after is not None else "")
    last = (finished.stdout.strip() or finished.stderr.strip()).splitlines()[-1:] or [""]
    return (f"{agent.name:20} {scenario:22} {stopped:13} exit={finished.code!s:5} "
            f"{finished.seconds:6.1f}s calls={model_calls:<3} message={'yes' if shown else 'no':3}"
            f"  last line: {last[0][:120]}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, default=25.0)
    parser.add_argument("--agents", default=",".join(agent.name for agent in AGENTS))
    parser.add_argument("--retry-after", type=int, default=3600)
    args = parser.parse_args()
    scenarios = [(409, None), (409, args.retry_after), (402, None), (403, None), (429, None)]
    for name in args.agents.split(","):
        for status, retry_after in scenarios:
            print(await one(name, status, retry_after, args.deadline), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
