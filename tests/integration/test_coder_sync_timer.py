"""`agentmeter exporter` with `coder.sync_seconds`: the sync runs on a timer and its health is
on the exporter's /metrics."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
from sqlalchemy import select

from ledger import metric_names as m
from ledger.engine import create_sync_engine
from ledger.schema import users
from ledger.settings import DatabaseSettings
from tests.support.fake_coder import FakeCoder
from tests.support.monitoring_stack import free_port


async def _metric(url: str, name: str) -> float | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            body = await response.text()
    except aiohttp.ClientError:
        return None
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def _until(url: str, name: str, value: float, seconds: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await _metric(url, name) == value:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never became {value} (last: {await _metric(url, name)})")


async def test_the_exporter_syncs_on_a_timer_and_shows_failures(
        coder: FakeCoder, pg_url: str) -> None:
    admin = coder.add_user("admin")
    coder.add_user("alice", "Alice Liddell")
    port = free_port()
    env = {**os.environ, "AGENTMETER_DATABASE_URL": pg_url,
           "AGENTMETER_CODER_URL": coder.base_url, "AGENTMETER_CODER_TOKEN": coder.token_for(admin),
           "AGENTMETER_CODER_SYNC_SECONDS": "0.2", "AGENTMETER_EVENT_LOOP": "asyncio"}
    env.pop("AGENTMETER_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentmeter", "exporter", "--listen", f"127.0.0.1:{port}",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        await _until(metrics, m.CODER_SYNC_SUCCESS, 1)
        assert (await _metric(metrics, m.CODER_SYNC_LAST_SUCCESS_TIMESTAMP_SECONDS) or 0) > 0
        engine = create_sync_engine(DatabaseSettings(url=pg_url))
        try:
            with engine.connect() as conn:
                names = set(conn.execute(select(users.c.username)).scalars())
        finally:
            engine.dispose()
        assert names == {"admin", "alice"}

        await coder.close()
        await _until(metrics, m.CODER_SYNC_SUCCESS, 0)
    finally:
        process.terminate()
        await process.wait()
