"""The soak run's clients: an open-loop load of agents on two limiters, every answer classified.

Each request carries its own id as `X-Chat-ID`, so the ledger can be asked afterwards how many
records each request produced: one per answered request, none for a refused or failed one. The
load is open-loop (requests start on a fixed schedule whatever the answers take), as agents
arrive in production; a faulty phase therefore shows up as errors and latency, not as a lower
request rate.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import aiohttp

from tests.support.soak_upstream import FAULT_HEADER, ID_HEADER, Fault

OPENAI_MODEL = "soak-gpt"
ANTHROPIC_MODEL = "soak-claude"
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
TERMINAL = {"openai": b"data: [DONE]", "anthropic": b"message_stop"}
# Faults by weight; streams also get provider drops and client aborts.
PLAIN_MIX = {Fault.NONE: 960, Fault.ERROR_500: 15, Fault.HANG: 10, Fault.RESET: 15}
STREAM_MIX = {**PLAIN_MIX, Fault.NONE: 910, Fault.DROP: 25, Fault.SLOW: 25}
# A stuck limiter must not make the generator pile up tasks without bound.
MAX_IN_FLIGHT = 3000
CLIENT_TIMEOUT_SECONDS = 30.0
WARM_CONCURRENCY = 32


class Outcome(StrEnum):
    OK = "ok"  # 2xx and the whole answer (a stream up to its terminal event)
    ABORTED = "aborted"  # the client gave up on a stream midway, on purpose
    CUT = "cut"  # 2xx, then the answer broke off (provider drop, or the limiter was killed)
    STATUS = "status"  # an answer with a non-2xx status
    NO_ANSWER = "no_answer"  # no HTTP answer at all (connection refused or reset)
    TIMEOUT = "timeout"  # the client's own deadline


@dataclass(frozen=True)
class Caller:
    username: str
    key: str


@dataclass(frozen=True)
class Result:
    id: str
    username: str
    limiter: int
    provider: str
    stream: bool
    fault: Fault
    outcome: Outcome
    status: int | None
    started: float  # time.monotonic()
    ended: float
    aborted_at: float | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def request_body(provider: str, stream: bool, request_id: str) -> bytes:
    content = f"Soak request {request_id}: fix the failing test in module {request_id[:6]}."
    if provider == "openai":
        body: dict[str, object] = {"model": OPENAI_MODEL, "stream": stream,
                                   "messages": [{"role": "user", "content": content}]}
    else:
        body = {"model": ANTHROPIC_MODEL, "max_tokens": 256, "stream": stream,
                "messages": [{"role": "user", "content": content}]}
    return json.dumps(body).encode()


async def call(session: aiohttp.ClientSession, base_url: str, limiter: int, caller: Caller,
               provider: str, stream: bool, fault: Fault) -> Result:
    """One request, classified; never raises for what a faulty system may do."""
    request_id = uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {caller.key}", "Content-Type": "application/json",
               "X-Chat-ID": request_id, ID_HEADER: request_id, FAULT_HEADER: fault.value}
    status: int | None = None
    aborted_at: float | None = None
    started = time.monotonic()
    try:
        async with session.post(base_url + PATHS[provider], headers=headers,
                                data=request_body(provider, stream, request_id)) as answer:
            status = answer.status
            if not 200 <= status < 300:
                await answer.read()
                outcome = Outcome.STATUS
            elif fault is Fault.SLOW:
                await answer.content.readany()  # the first event, then the agent gives up
                aborted_at = time.monotonic()
                answer.close()
                outcome = Outcome.ABORTED
            else:
                data = await answer.read()
                whole = not stream or TERMINAL[provider] in data
                outcome = Outcome.OK if whole else Outcome.CUT
    except TimeoutError:
        outcome = Outcome.TIMEOUT
    except aiohttp.ClientError:
        outcome = Outcome.NO_ANSWER if status is None else Outcome.CUT
    return Result(request_id, caller.username, limiter, provider, stream, fault, outcome,
                  status, started, time.monotonic(), aborted_at)


class LoadGenerator:
    """Sends the load to the limiters that are up, round robin, and keeps every result."""

    def __init__(self, limiters: Sequence[str], callers: Sequence[Caller], seed: int = 8) -> None:
        self.limiters = list(limiters)
        self.callers = list(callers)
        self.up = [True] * len(self.limiters)
        self.results: list[Result] = []
        self.skipped = 0
        self.in_flight = 0
        self._turn = 0
        self._random = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LoadGenerator:
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_SECONDS))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _pick_limiter(self) -> int:
        candidates = [i for i, up in enumerate(self.up) if up] or list(range(len(self.up)))
        self._turn += 1
        return candidates[self._turn % len(candidates)]

    async def _send(self, limiter: int, caller: Caller, provider: str, stream: bool,
                    fault: Fault) -> None:
        assert self._session is not None
        self.in_flight += 1
        try:
            self.results.append(await call(self._session, self.limiters[limiter], limiter,
                                           caller, provider, stream, fault))
        finally:
            self.in_flight -= 1

    def _one(self) -> tuple[int, Caller, str, bool, Fault]:
        rnd = self._random
        stream = rnd.random() < 0.5
        mix = STREAM_MIX if stream else PLAIN_MIX
        fault = rnd.choices(list(mix), weights=list(mix.values()))[0]
        return (self._pick_limiter(), rnd.choice(self.callers),
                rnd.choice(("openai", "anthropic")), stream, fault)

    async def warm(self) -> None:
        """Every caller once on every limiter, so each knows every key before any outage."""
        semaphore = asyncio.Semaphore(WARM_CONCURRENCY)

        async def one(limiter: int, caller: Caller, provider: str) -> None:
            async with semaphore:
                await self._send(limiter, caller, provider, False, Fault.NONE)

        await asyncio.gather(*(one(limiter, caller, ("openai", "anthropic")[n % 2])
                               for limiter in range(len(self.limiters))
                               for n, caller in enumerate(self.callers)))

    async def run(self, rate: float, duration: float) -> None:
        """Start `rate` requests a second for `duration` seconds; wait for all to finish."""
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        start = loop.time()
        sent = 0
        while sent / rate < duration:
            delay = start + sent / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent += 1
            if self.in_flight >= MAX_IN_FLIGHT:
                self.skipped += 1
                continue
            task = asyncio.create_task(self._send(*self._one()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
