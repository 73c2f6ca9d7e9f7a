"""How each coding agent is pointed at a provider base URL, non-interactively and offline.

Each function writes the client's config files under `home` (its own HOME, so nothing of the
machine's user leaks in or out) and returns the environment and the command line that asks it
`prompt`. Telemetry, update checks and other non-essential traffic are switched off: with no
internet, any of them would hang or fail the run. The base URLs are the provider's, without a
version suffix (a gateway's URL in the same form works the same way).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.agent_clis import agent_binary, python_bin

AGENTS_SDK_CLIENT = Path(__file__).with_name("agents_sdk_client.py")


@dataclass(frozen=True)
class AgentRun:
    argv: list[str]
    env: dict[str, str]


@dataclass
class Finished:
    code: int | None  # None: still running at the timeout (then killed)
    stdout: str
    stderr: str
    seconds: float


async def run(agent: AgentRun, cwd: Path, timeout: float = 90) -> Finished:
    """Run a client to the end with stdin closed (as in CI), without blocking the event loop
    that serves the fake provider."""
    started = time.monotonic()
    # A session of its own: the npm wrappers start the native client as a child, and the
    # whole group is killed at the timeout (the child would otherwise hold the pipes open).
    process = await asyncio.create_subprocess_exec(
        *agent.argv, cwd=cwd, env=agent.env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    code: int | None
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        code = process.returncode
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = await process.communicate()
        code = None
    return Finished(code, out.decode(errors="replace"), err.decode(errors="replace"),
                    time.monotonic() - started)


def base_env(home: Path) -> dict[str, str]:
    """A clean environment: the tools on PATH (node for the npm CLIs), a private HOME."""
    node = shutil.which("node")
    paths = [str(Path(node).parent)] if node else []
    return {"PATH": os.pathsep.join([*paths, "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(home), "LANG": "C.UTF-8", "NO_COLOR": "1", "CI": "true"}


def claude_code(home: Path, base_url: str, key: str, prompt: str, model: str,
                *extra: str) -> AgentRun:
    """Claude Code in print mode (`-p`), against `ANTHROPIC_BASE_URL`."""
    env = {**base_env(home), "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": key,
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
           "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1"}
    return AgentRun([str(agent_binary("claude")), "-p", prompt, "--model", model, *extra], env)


def codex(home: Path, base_url: str, key: str, prompt: str, model: str) -> AgentRun:
    """Codex CLI `exec` with a custom provider on the Responses API (its only wire API)."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "agentmeter"\n'
        "check_for_update_on_startup = false\n\n"
        "[model_providers.agentmeter]\n"
        'name = "agentmeter"\n'
        f'base_url = "{base_url}/v1"\n'
        'env_key = "AGENTMETER_KEY"\n'
        'wire_api = "responses"\n\n'
        "[analytics]\nenabled = false\n")
    env = {**base_env(home), "CODEX_HOME": str(codex_home), "AGENTMETER_KEY": key}
    return AgentRun([str(agent_binary("codex")), "exec", "--skip-git-repo-check", prompt], env)


def opencode(home: Path, base_url: str, key: str, prompt: str, model: str) -> AgentRun:
    """opencode `run`; `model` is `provider/model` with provider `anthropic` (Messages),
    `openai` (Responses) or `agentmeter` (an OpenAI-compatible one: Chat Completions)."""
    options = {"baseURL": f"{base_url}/v1", "apiKey": key}
    config = {
        "$schema": "https://opencode.ai/config.json", "autoupdate": False, "share": "disabled",
        "provider": {
            "anthropic": {"options": options},
            "openai": {"options": options},
            "agentmeter": {"npm": "@ai-sdk/openai-compatible", "name": "agentmeter",
                           "options": options,
                           "models": {model.partition("/")[2]: {"name": "through agentmeter"}}},
        },
    }
    path = home / "opencode.json"
    path.write_text(json.dumps(config, indent=1))
    env = {**base_env(home), "OPENCODE_CONFIG": str(path), "OPENCODE_DISABLE_AUTOUPDATE": "1",
           "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
           "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1"}
    return AgentRun([str(agent_binary("opencode")), "run", "-m", model, prompt], env)


def gemini_cli(home: Path, base_url: str, key: str, prompt: str, model: str) -> AgentRun:
    """Gemini CLI headless (`-p`), against `GOOGLE_GEMINI_BASE_URL` with an API key."""
    settings = {"security": {"auth": {"selectedType": "gemini-api-key"}},
                "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
                "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}}
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings, indent=1))
    env = {**base_env(home), "GEMINI_API_KEY": key, "GOOGLE_GEMINI_BASE_URL": base_url,
           "GEMINI_CLI_TRUST_WORKSPACE": "true"}
    return AgentRun([str(agent_binary("gemini")), "-p", prompt, "-m", model], env)


def llm_cli(home: Path, base_url: str, key: str, prompt: str, model: str,
            *extra: str) -> AgentRun:
    """Simon Willison's `llm` with an extra OpenAI-compatible model (Chat Completions)."""
    user_path = home / "llm"
    user_path.mkdir(parents=True, exist_ok=True)
    (user_path / "extra-openai-models.yaml").write_text(
        f"- model_id: agentmeter\n  model_name: {model}\n  api_base: {base_url}/v1\n"
        "  api_key_name: agentmeter\n")
    (user_path / "keys.json").write_text(json.dumps({"agentmeter": key}))
    env = {**base_env(home), "LLM_USER_PATH": str(user_path)}
    return AgentRun([str(agent_binary("llm")), "-m", "agentmeter", *extra, prompt], env)


def agents_sdk(home: Path, base_url: str, key: str, prompt: str, model: str, *,
               api: str, stream: bool, note: Path) -> AgentRun:
    """The note-taking agent of `agents_sdk_client.py` on the OpenAI Agents SDK."""
    agent_binary("python")
    return AgentRun([str(python_bin()), str(AGENTS_SDK_CLIENT), f"{base_url}/v1", key, model,
                     str(note), api, "stream" if stream else "plain", prompt], base_env(home))


@dataclass(frozen=True)
class Agent:
    """One client set-up: the dialect it speaks and how to run it with a prompt."""

    name: str
    dialect: str  # openai | anthropic | google
    make: Callable[[Path, str, str, str], AgentRun]  # (home, base_url, key, prompt)


AGENTS = [
    Agent("claude-code", "anthropic",
          lambda home, url, key, prompt: claude_code(home, url, key, prompt,
                                                     "claude-sonnet-4-6")),
    Agent("codex", "openai",
          lambda home, url, key, prompt: codex(home, url, key, prompt, "gpt-5-codex")),
    Agent("opencode-anthropic", "anthropic",
          lambda home, url, key, prompt: opencode(home, url, key, prompt,
                                                  "anthropic/claude-sonnet-4-6")),
    Agent("opencode-openai", "openai",
          lambda home, url, key, prompt: opencode(home, url, key, prompt, "openai/gpt-5-mini")),
    Agent("opencode-compatible", "openai",
          lambda home, url, key, prompt: opencode(home, url, key, prompt,
                                                  "agentmeter/gpt-5-mini")),
    Agent("gemini-cli", "google",
          lambda home, url, key, prompt: gemini_cli(home, url, key, prompt,
                                                    "gemini-2.5-flash")),
    Agent("llm", "openai",
          lambda home, url, key, prompt: llm_cli(home, url, key, prompt, "gpt-5-mini")),
    Agent("agents-sdk", "openai",
          lambda home, url, key, prompt: agents_sdk(home, url, key, prompt, "gpt-5-mini",
                                                    api="responses", stream=True,
                                                    note=home / "note.txt")),
]
