"""Serving the limiter: what `agentmeter limiter` and `agentmeter serve` run."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry

from ledger.settings import DatabaseSettings
from limiter.http.app import create_app
from limiter.lane import GatewayRunner
from limiter.settings import LimiterSettings

# Time in-flight requests (streams included) get to finish when the process is asked to stop.
SHUTDOWN_TIMEOUT_SECONDS = 30.0


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets) to a host and a port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def run_limiter(config: LimiterSettings, database: DatabaseSettings, host: str,
                      port: int, registry: CollectorRegistry | None = None) -> None:
    """Serve until cancelled, then finish in-flight requests and close cleanly."""
    app = create_app(config, database, registry=registry)
    # The provider routes are served on the fast lane, everything else by aiohttp.
    runner = GatewayRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()

