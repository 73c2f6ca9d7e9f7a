"""Serving the limiter: what `agentmeter limiter` and `agentmeter serve` run.

Everything is served by aiohttp's own server, configured from the limiter's settings:

- the request head: each connection is a `limiter.http.connection.GatewayConnection`, whose
  keep-alive timer (`keepalive_timeout = client_header_timeout_seconds`) closes an idle
  connection silently and answers a head that has not come whole within the timeout of its
  first byte with 408, counted in `client_timeouts{phase="head"}`; line, field and header-count
  limits are aiohttp's (8190 bytes, 8190 bytes, 128 fields);
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
from limiter.http.app_keys import METRICS, SETTINGS
from limiter.http.connection import GatewayServer
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


# Options of the runner itself and of aiohttp's Server, not of each connection.
_RUNNER_OPTIONS = ("shutdown_timeout", "handle_signals", "handler_cancellation")


class GatewayRunner(web.AppRunner):
    """aiohttp's `AppRunner` (it starts and cleans up the app) whose server makes
    `GatewayConnection`s."""

    def __init__(self, app: web.Application, **options: Any) -> None:
        super().__init__(app, **options)
        self._connection_options = {key: value for key, value in options.items()
                                    if key not in _RUNNER_OPTIONS}

    async def _make_server(self) -> web.Server:
        app_server = await super()._make_server()
        return GatewayServer(app_server.request_handler,
                             request_factory=app_server.request_factory,
                             handler_cancellation=app_server.handler_cancellation,
                             head_timed_out=self.app[METRICS].client_timeouts_by("head").inc,
                             **self._connection_options)


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
    return GatewayRunner(app, **options)


async def run_limiter(config: LimiterSettings, database: DatabaseSettings, host: str,
                      port: int, registry: CollectorRegistry | None = None,
                      coder: CoderSettings | None = None) -> None:
    """Serve until cancelled, then finish in-flight requests and close cleanly; with
    `coder.url` set, Coder tokens are accepted as keys."""
    runner = gateway_runner(create_app(config, database, registry=registry, coder=coder))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=config.listen_backlog)
        await site.start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
