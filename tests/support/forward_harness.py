"""A minimal gateway around the relay for the protocol tests: reads the body, forwards it."""

from __future__ import annotations

import asyncio
import json
import socket

from aiohttp import web
from prometheus_client import CollectorRegistry

from limiter.http.errors import LimiterError
from limiter.metrics import LimiterMetrics
from limiter.relay.forward import ForwardResult, relay
from limiter.relay.prepare import prepare_call
from limiter.relay.registry import ROUTES
from limiter.relay.upstreams import Upstreams
from limiter.settings import LimiterSettings, UpstreamSettings

OPENAI_KEY = "sk-provider-openai"
ANTHROPIC_KEY = "sk-provider-anthropic"
CLIENT_KEY = "am-client-key"


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


class Harness:
    """A minimal gateway: reads the body, relays it to the upstream, returns its response."""

    def __init__(self, upstream_url: str, timeout_s: float = 5.0) -> None:
        self.providers = {"openai": UpstreamSettings(upstream_url, OPENAI_KEY),
                          "anthropic": UpstreamSettings(upstream_url, ANTHROPIC_KEY)}
        self.timeout_s = timeout_s
        self.results: asyncio.Queue[ForwardResult] = asyncio.Queue()
        self.errors: list[LimiterError] = []
        self.first_bytes = 0
        self.port = 0
        # The handler tasks, for tests that cancel one (as a shutdown does).
        self.handlers: list[asyncio.Task[object]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        raw = await request.read()
        route = next(route for route in ROUTES if route.path == request.path)
        try:
            call = prepare_call(route=route, upstream=self.upstreams.for_call(route, None),
                                request=request, body=json.loads(raw), raw_body=raw)
            call.on_first_byte = self._first_byte
            result = await relay(call, request)
        except LimiterError as exc:
            self.errors.append(exc)
            return web.json_response(exc.body(), status=exc.status)
        self.results.put_nowait(result)
        return result.response

    def _first_byte(self) -> None:
        self.first_bytes += 1

    async def result(self) -> ForwardResult:
        return await asyncio.wait_for(self.results.get(), 5)

    async def __aenter__(self) -> Harness:
        settings = LimiterSettings(providers=self.providers,
                                   upstream_timeout_seconds=self.timeout_s)
        self.upstreams = Upstreams(settings, LimiterMetrics(CollectorRegistry(), (), ()))
        app = web.Application()
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
        await self.upstreams.close()
