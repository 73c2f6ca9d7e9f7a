"""The one home for serving a test's fake on a real loopback port: starting it, its URL, closing.

`LocalServer` serves an aiohttp application (the fakes that the code under test reaches from an
event loop); `ThreadedServer` serves an `http.server` handler from a thread (the fakes that
synchronous code under test calls from its own threads).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from aiohttp import web

HOST = "127.0.0.1"


class LocalServer:
    """An aiohttp application on 127.0.0.1: `await start()` (or `async with`), `base_url`,
    `await close()`.

    The application comes from `app()`, which a fake overrides (or from the factory given), and
    is built anew on each start. The first start takes a free port; a start after `close()`
    takes the same port again, so a fake can go away and come back where its clients point.
    Given `tls`, it serves HTTPS and `base_url` names `localhost` (the name the tests'
    certificates carry).
    """

    def __init__(self, app: Callable[[], web.Application] | None = None, *,
                 tls: ssl.SSLContext | None = None) -> None:
        self._make_app = app
        self._tls = tls
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        if self._make_app is None:
            raise NotImplementedError("override app() or pass an application factory")
        return self._make_app()

    @property
    def base_url(self) -> str:
        """Scheme, host and port, without a trailing slash."""
        if self._tls is not None:
            return f"https://localhost:{self.port}"
        return f"http://{HOST}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(self.app(), shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, HOST, self.port, ssl_context=self._tls).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening (clients then get connection refused); a no-op when not started."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ThreadedServer:
    """An `http.server` handler on a free port of 127.0.0.1, served from a daemon thread (one
    thread more per request): `start()` (or `with`), `base_url`, `close()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str,
                 poll_interval: float = 0.5) -> None:
        self._server = ThreadingHTTPServer((HOST, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(poll_interval,),
                                        daemon=True, name=name)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """host:port, as a Prometheus scrape target names it."""
        return f"{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port (requests still being answered finish on their own
        threads)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
