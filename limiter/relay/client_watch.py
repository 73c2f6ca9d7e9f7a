"""Noticing that a streaming client has gone away.

aiohttp does not tell a handler that its client left, so the streams being relayed are watched:
one timer per event loop looks at every watched client connection each `POLL_SECONDS` and
cancels the relaying task of each one found closed (the relay takes that cancellation back).
One shared timer rather than one per stream: with 4,000 streams open, a timer each (80,000
timer callbacks a second) cost a fifth of the limiter's core in `bench.limiter_streams`; the
shared one walks the same connections in a single callback.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from aiohttp import web

# How often the watched connections are looked at: how late a departed client is noticed.
POLL_SECONDS = 0.05


class ClientWatch:
    """Cancels `task` as soon as the connection of `request`'s client is found closed; `fired`
    says it did. `stop` ends the watch."""

    __slots__ = ("_poller", "_request", "_task", "fired")

    def __init__(self, request: web.BaseRequest, task: asyncio.Task[Any]) -> None:
        self._request = request
        self._task = task
        self.fired = False
        self._poller = _poller_of(asyncio.get_running_loop())
        self._poller.add(self)

    def client_gone(self) -> bool:
        transport = self._request.transport
        return transport is None or transport.is_closing()

    def fire(self) -> None:
        self.fired = True
        self._task.cancel()

    def stop(self) -> None:
        self._poller.discard(self)


class _Poller:
    """The timer of one event loop, running only while something is watched."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watched: dict[ClientWatch, None] = {}
        self._handle: asyncio.TimerHandle | None = None

    def add(self, watch: ClientWatch) -> None:
        self._watched[watch] = None
        if self._handle is None:
            self._handle = self._loop.call_later(POLL_SECONDS, self._check)

    def discard(self, watch: ClientWatch) -> None:
        self._watched.pop(watch, None)

    def _check(self) -> None:
        self._handle = None
        gone = [watch for watch in self._watched if watch.client_gone()]
        for watch in gone:
            del self._watched[watch]
            watch.fire()
        if self._watched:
            self._handle = self._loop.call_later(POLL_SECONDS, self._check)


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Poller] = (
    weakref.WeakKeyDictionary())


def _poller_of(loop: asyncio.AbstractEventLoop) -> _Poller:
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = _Poller(loop)
    return poller
