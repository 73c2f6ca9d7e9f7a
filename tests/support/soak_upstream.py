"""The soak run's provider: the fake upstream, told per request which fault to play.

The load generator names the fault in a request header that the limiter forwards as any other
client header (`X-Soak-Fault`), so a fault hits exactly the request the client expects it on,
however the two limiters interleave. The fake also notes, per request (`X-Soak-Id`), when an
answer ended and whether it ended early, so the soak report can tell how soon the upstream was
closed after a client gave up on a stream. Runs in its own process:
`python -m tests.support.soak_upstream --port P`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from enum import StrEnum

from aiohttp import web

from ledger.tokens import TokenUsage
from tests.support.fake_upstream import Answer, FakeUpstream

FAULT_HEADER = "X-Soak-Fault"
ID_HEADER = "X-Soak-Id"
STATS_PATH = "/soak/stats"

# What every answer reports: about an agent turn's size (priced by the soak policy).
ANSWER_USAGE = TokenUsage(input=800, output=60)
ANSWER_TEXT = " ".join(f"token{i}" for i in range(40))
# A "slow" stream takes this long per event, so a client can give up in the middle of it.
SLOW_EVENT_SECONDS = 0.05
# Events sent before a "drop" cuts the connection (after the input side is reported).
DROP_AFTER_EVENTS = 6


class Fault(StrEnum):
    NONE = "none"
    ERROR_500 = "error500"  # the provider answers 500 without usage
    HANG = "hang"  # no answer until past the limiter's upstream timeout
    RESET = "reset"  # the connection is closed before any answer
    DROP = "drop"  # a stream cut midway by the provider
    SLOW = "slow"  # a slow stream, which the client aborts midway


class FaultyUpstream(FakeUpstream):
    def __init__(self, hang_seconds: float) -> None:
        super().__init__(Answer(text=ANSWER_TEXT, usage=ANSWER_USAGE))
        self.hang_seconds = hang_seconds
        self.counts: dict[str, int] = {fault.value: 0 for fault in Fault}
        # Soak id -> (monotonic time the answer ended, whether it ended before its last event).
        self.endings: dict[str, tuple[float, bool]] = {}

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get(STATS_PATH, self._stats)
        return app

    def _answer_for(self, fault: Fault) -> Answer | None:
        if fault is Fault.ERROR_500:
            return replace(self.default, status=500)
        if fault is Fault.HANG:
            return replace(self.default, hang_seconds=self.hang_seconds)
        if fault is Fault.DROP:
            return replace(self.default, drop_after=DROP_AFTER_EVENTS)
        if fault is Fault.SLOW:
            return replace(self.default, event_delay=SLOW_EVENT_SECONDS)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = Fault(request.headers.get(FAULT_HEADER, Fault.NONE))
        self.counts[fault.value] += 1
        self.received.clear()  # a soak run sends tens of thousands; nobody reads them back
        if fault is Fault.RESET:
            await request.read()
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=499)
        await request.read()  # cached: the parent's read below returns without yielding
        answer = self._answer_for(fault)
        if answer is not None:
            # Taken by the parent before its first await, so no other request can take it.
            self.answers.appendleft(answer)
        started = time.monotonic()
        response = await super()._handle(request)
        ended = time.monotonic()
        if fault is Fault.SLOW:
            full = SLOW_EVENT_SECONDS * (len(ANSWER_TEXT.split(" ")) + 2)
            self.endings[request.headers.get(ID_HEADER, "")] = (ended, ended - started < full)
        return response

    async def _stats(self, _request: web.Request) -> web.Response:
        return web.json_response({
            "counts": self.counts,
            "endings": {key: list(value) for key, value in self.endings.items()},
        })


def main() -> None:
    parser = argparse.ArgumentParser(description="Fault-injecting fake upstream for the soak run")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang-seconds", type=float, default=5.0)
    args = parser.parse_args()
    fake = FaultyUpstream(args.hang_seconds)
    web.run_app(fake.app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
