"""Bounded waits on the request path, without `asyncio.timeout`.

Every proxied request waits on a few futures: the limit check's answer, the provider's head and,
for a stream, each next chunk. `asyncio.timeout()` cost about 9 us per use on the 2-core
benchmark machine (it looks up the current task, schedules and reschedules a timer, and counts
cancellations on the way out). `wait_within` sets one timer that fails the awaited future itself
with TimeoutError, about 1 us, and the awaiting code sees the same TimeoutError as before.

Use it only on a future whose owner handles a TimeoutError set on it like any other failure of
that future: here the connection it belongs to is then closed, never reused.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_within(waiter: asyncio.Future[T], seconds: float | None) -> T:
    """`waiter`'s result, or TimeoutError once `seconds` have passed (None: no limit).

    A cancellation of the awaiting task cancels `waiter`, as a plain `await` does.
    """
    if seconds is None:
        return await waiter
    timer = waiter.get_loop().call_later(seconds, _expire, waiter)
    try:
        return await waiter
    finally:
        timer.cancel()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
