"""The limiter process listens with the backlog its settings give (`limiter.listen_backlog`).

A listening socket's Send-Q in `ss` is the backlog the kernel granted it: aiohttp's default is
128, too few for agents that open thousands of streams within seconds (past it, SYNs are
dropped and clients retry after 1, 3, 7... seconds).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.monitoring_stack import free_port, running
from tests.support.requirements import require_binary

ROOT = Path(__file__).resolve().parents[2]


def granted_backlog(ss: str, port: int) -> int:
    lines = subprocess.run([ss, "-ltnH", f"sport = :{port}"], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    assert len(lines) == 1, lines
    return int(lines[0].split()[2])


async def test_the_limiter_listens_with_the_configured_backlog(tmp_path: Path,
                                                               sqlite_url: str) -> None:
    ss = require_binary("ss")  # iproute2
    config = tmp_path / "agentmeter.yaml"
    config.write_text(yaml.safe_dump({
        "database": {"url": sqlite_url},
        "limiter": {"spool_dir": str(tmp_path / "spool"), "listen_backlog": 777},
    }))
    port = free_port()
    async with running("agentmeter limiter",
                       [sys.executable, "-m", "agentmeter", "limiter", "--listen",
                        f"127.0.0.1:{port}", "--config", str(config)],
                       tmp_path / "limiter.log", cwd=ROOT) as process:
        await process.wait_ready(f"http://127.0.0.1:{port}/healthz")
        assert granted_backlog(ss, port) == 777
