"""The real coding-agent clients the agent tests run, at pinned versions, in a cache directory.

`python -m tests.support.agent_clis` installs them (CI calls it from `.ci/run`): the npm CLIs
into `<dir>/npm`, the Python ones into their own virtualenv `<dir>/py` (apart from the project's,
whose `openai` pin they need not share). `<dir>` is `$AGENTMETER_AGENTS_DIR`, by default
`.cache/agents/` in the repository (git-ignored). A stamp file records what was installed, so a
second run with the same pins does nothing; npm and pip use their caches.

Tests ask for a client with `agent_binary(name)`: a missing one skips on a developer's machine
and fails in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.requirements import missing

ROOT = Path(__file__).resolve().parents[2]

NPM_PACKAGES = {
    "claude": "@anthropic-ai/claude-code@2.1.332",
    "codex": "@openai/codex@0.171.0",
    "opencode": "opencode-ai@1.18.33",
    "gemini": "@google/gemini-cli@0.61.0",
}
PYTHON_PACKAGES = {"llm": "llm==0.36", "agents-sdk": "openai-agents==0.24.0"}


def agents_dir() -> Path:
    return Path(os.environ.get("AGENTMETER_AGENTS_DIR") or ROOT / ".cache" / "agents")


def npm_bin(name: str) -> Path:
    return agents_dir() / "npm" / "node_modules" / ".bin" / name


def python_bin(name: str = "python") -> Path:
    return agents_dir() / "py" / "bin" / name


def agent_binary(name: str) -> Path:
    """The installed client `name` (a key of NPM_PACKAGES, `llm`, or `python` for the Agents
    SDK); skips locally and fails in CI when it is not installed."""
    path = npm_bin(name) if name in NPM_PACKAGES else python_bin(name)
    if not path.exists() or _stamp() != _pins():
        missing(f"agent client {name!r} (install with `python -m tests.support.agent_clis`)")
    return path


def _pins() -> dict[str, str]:
    return {**NPM_PACKAGES, **PYTHON_PACKAGES}


def _stamp_path() -> Path:
    return agents_dir() / "installed.json"


def _stamp() -> dict[str, str] | None:
    try:
        value = json.loads(_stamp_path().read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def install() -> bool:
    """Install every pinned client unless the same pins are installed; True if it installed."""
    if _stamp() == _pins():
        return False
    npm_dir = agents_dir() / "npm"
    npm_dir.mkdir(parents=True, exist_ok=True)
    (npm_dir / "package.json").write_text('{"private": true}\n')
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline",
                    "--loglevel=error", *NPM_PACKAGES.values()], cwd=npm_dir, check=True)
    venv = agents_dir() / "py"
    if not python_bin().exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python_bin("pip")), "install", "--quiet", *PYTHON_PACKAGES.values()],
                   check=True)
    _stamp_path().write_text(json.dumps(_pins(), indent=1) + "\n")
    return True


def main() -> None:
    started = time.monotonic()
    installed = install()
    took = time.monotonic() - started
    what = "installed" if installed else "already installed"
    print(f"agent clients {what} in {agents_dir()} ({took:.1f} s)")


if __name__ == "__main__":
    main()
