"""Running `agentmeter …` as a real process without blocking the test's event loop (fake
servers of the test keep answering while the command runs)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def agentmeter(env: dict[str, str], *args: str, ok: bool = True) -> Finished:
    """Run the command with `env` added to the environment; `ok` asserts how it ended (a
    failure is one line on stderr, never a traceback)."""
    full = {**os.environ, **env}
    full.pop("AGENTMETER_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentmeter", *args, env=full,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    result = Finished(process.returncode or 0, out.decode(), err.decode())
    if ok:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0, result.stdout
        assert "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result
