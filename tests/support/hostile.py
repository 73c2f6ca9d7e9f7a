"""Helpers for the hostile-input tests: a gateway served from a thread, ledger dumps, raw HTTP.

Hypothesis drives its examples from plain (sync) functions, so the fuzz tests talk to a real
limiter served on a loopback port by an event loop in a background thread — one gateway per test
function, shared by all its examples — with `http.client`, which sends bytes exactly as given.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from ledger.engine import create_sync_engine
from ledger.schema import metadata
from ledger.settings import DatabaseSettings
from limiter.http.app import create_app
from limiter.http.app_keys import RECORDER
from limiter.http.server import gateway_runner
from limiter.settings import LimiterSettings

TableDump = dict[str, list[tuple[Any, ...]]]


def ledger_dump(url: str) -> TableDump:
    """Every row of every ledger table, in a stable order: what "nothing written" compares."""
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.connect() as conn:
            return {table.name: sorted((tuple(row) for row in conn.execute(select(table))),
                                       key=repr)
                    for table in metadata.sorted_tables}
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


# What the dialects' error objects add to the limiter's own `{"error": {"code", "message"}}`:
# OpenAI's `type` and `param` beside them, Anthropic's `type` beside them and at the top.
ERROR_EXTRAS = frozenset({"type", "param"})


def assert_clean_refusal(answer: Answer) -> str:
    """A 4xx whose body is the limiter's JSON error object (on an OpenAI route in OpenAI's
    shape, which adds `type`); returns the error code."""
    assert 400 <= answer.status < 500, (answer.status, answer.body[:500])
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    body = answer.json()
    assert isinstance(body, dict) and set(body) - ERROR_EXTRAS == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) - ERROR_EXTRAS == {"code", "message"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert b"Traceback" not in answer.body
    return str(error["code"])


class ThreadedGateway:
    """The limiter app served on 127.0.0.1 by an event loop running in a daemon thread."""

    def __init__(self, settings: LimiterSettings, database_url: str) -> None:
        self.registry = CollectorRegistry()
        self.app = create_app(settings, DatabaseSettings(url=database_url,
                                                         connect_timeout_seconds=5.0),
                              registry=self.registry)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="hostile-gateway")

    def _call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        # As `agentmeter limiter` serves it.
        self._runner = gateway_runner(self.app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        try:
            self._call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def settled(self) -> None:
        """Wait until every answered request's usage has been written."""
        self._call(self.app[RECORDER].idle())

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            data = response.read()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                          data)
        finally:
            conn.close()


@contextmanager
def threaded_gateway(settings: LimiterSettings, database_url: str) -> Iterator[ThreadedGateway]:
    gateway = ThreadedGateway(settings, database_url)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()
