"""Serving the limiter: what `agentmeter limiter` and `agentmeter serve` run.

Everything is served by aiohttp's own server, configured from the limiter's settings:

- the request head: aiohttp's keep-alive timer is armed when a connection opens and again when
  an answer ends, and closes the connection if no complete head has arrived when it fires, so
  `keepalive_timeout = client_header_timeout_seconds` bounds the time to send a whole head (and
  the life of an idle keep-alive connection); line, field and header-count limits are aiohttp's
  (8190 bytes, 8190 bytes, 128 fields);
- the body: aiohttp buffers at most twice `read_bufsize` of a body the handler has not read yet
  before it stops reading the socket, so a request whose key is not yet known valid holds at
  most `HEAD_CHECK_BUFFER_BYTES` in aiohttp plus what the proxy reads while the check is out
  (`limiter.relay.proxy.OVERLAP_BODY_BYTES`); the body's time bound is the handler's
  (`limiter.relay.body`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from coder.settings import CoderSettings
from ledger.settings import DatabaseSettings
from limiter.http.app import create_app
from limiter.http.app_keys import SETTINGS
from limiter.settings import LimiterSettings

# Time in-flight requests (streams included) get to finish when the process is asked to stop.
SHUTDOWN_TIMEOUT_SECONDS = 30.0
# Unread body bytes aiohttp buffers per request is twice this (its high-water mark).
HEAD_CHECK_BUFFER_BYTES = 64 * 1024


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets) to a host and a port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def gateway_runner(app: web.Application, **overrides: Any) -> web.AppRunner:
    """The runner that serves a limiter app (the tests serve it through the same one)."""
    settings = app[SETTINGS]
    options: dict[str, Any] = {
        "access_log": None,
        "shutdown_timeout": SHUTDOWN_TIMEOUT_SECONDS,
        "keepalive_timeout": settings.client_header_timeout_seconds,
        "read_bufsize": HEAD_CHECK_BUFFER_BYTES // 2,
        # Request bodies are decoded by the handler, within max_body_bytes (limiter.relay.body).
        "auto_decompress": False,
    }
    options.update(overrides)
    return web.AppRunner(app, **options)


async def run_limiter(config: LimiterSettings, database: DatabaseSettings, host: str,
                      port: int, registry: CollectorRegistry | None = None,
                      coder: CoderSettings | None = None) -> None:
    """Serve until cancelled, then finish in-flight requests and close cleanly; with
    `coder.url` set, Coder tokens are accepted as keys."""
    runner = gateway_runner(create_app(config, database, registry=registry, coder=coder))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
