"""Hears the ledger's change notifications (`ledger.notify`) and keeps a CheckCache current.

One PostgreSQL connection per limiter process LISTENs on the ledger's channel; its socket stays
registered with the event loop and each notification is applied as soon as it is read. While
the connection is down (database restarting, network lost) the cache is off and every key check
goes to the ledger, as it does without a cache; the listener reconnects with a growing pause
(`RECONNECT`: 0.5 s doubling up to 5 s, each ±20 %) and the cache starts empty again once
LISTEN is back in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg
from psycopg import pq

from ledger.backoff import Backoff
from ledger.engine import application_name_args, libpq_url
from ledger.notify import CHANNEL, LedgerReset, parse_change
from ledger.settings import DatabaseSettings
from limiter.admission.check_cache import CheckCache

log = logging.getLogger(__name__)

# How the connection shows in pg_stat_activity.
APPLICATION_NAME = "agentmeter-limiter-listen"
# Pauses between attempts to listen again.
RECONNECT = Backoff(initial_seconds=0.5, max_seconds=5.0)


class LedgerListener:
    def __init__(self, settings: DatabaseSettings, cache: CheckCache) -> None:
        self._url = libpq_url(settings.url)
        self._client = application_name_args(settings.url, APPLICATION_NAME)
        self._connect_timeout = max(1, round(settings.connect_timeout_seconds))
        self._cache = cache
        self._pgconn: pq.abc.PGconn | None = None  # while listening
        # An empty query in flight on the listening connection (see `caught_up`).
        self._round_trip: asyncio.Future[None] | None = None

    async def run(self) -> None:
        """Listen until cancelled, reconnecting whenever the connection is lost."""
        failures = 0
        while True:
            try:
                await self._listen()
            except Exception as exc:  # (psycopg.Error, OSError) unless a bug
                failures += 1
                # Said once per outage; the attempts go on quietly.
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "cannot listen for the ledger's changes; key checks all go "
                        "to the ledger until this works: %s", exc,
                        exc_info=not isinstance(exc, psycopg.Error | OSError))
                await asyncio.sleep(RECONNECT.delay(failures))
            else:  # the connection was lost: try again after the first pause
                failures = 0
                await asyncio.sleep(RECONNECT.delay(1))

    async def caught_up(self) -> None:
        """Return once every change committed before this call has been applied.

        PostgreSQL sends a listening session the notifications of every transaction committed
        before a query ahead of that query's answer, so one round trip on this connection is
        the barrier. Returns at once when not listening (the cache is off then).
        """
        while self._round_trip is not None:  # sent before this call: not a barrier for it
            await asyncio.shield(self._round_trip)
        pgconn = self._pgconn
        if pgconn is None:
            return
        self._round_trip = asyncio.get_running_loop().create_future()
        try:
            pgconn.send_query(b"")
            while pgconn.flush():
                await asyncio.sleep(0)
            await self._round_trip
        except psycopg.Error:
            pass  # the connection is going: the reader notices and turns the cache off
        finally:
            self._round_trip = None

    async def _listen(self) -> None:
        """One connection's life: LISTEN, apply what is heard, return when it is lost.

        Raises when the connection or LISTEN fails."""
        conn = await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=self._connect_timeout, **self._client)
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()
        fd = -1
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
            pgconn = conn.pgconn
            fd = pgconn.socket

            def readable() -> None:
                try:
                    self._read(pgconn)
                except psycopg.Error as exc:
                    if not lost.done():
                        lost.set_exception(exc)
                except Exception:  # a bug: start over rather than miss what was sent
                    log.exception("failed to apply the ledger's notifications")
                    if not lost.done():
                        lost.set_exception(psycopg.OperationalError("notification failed"))

            loop.add_reader(fd, readable)
            self._pgconn = pgconn
            self._cache.listening(True)
            log.info("hearing the ledger's changes: key checks are answered from memory")
            readable()  # anything libpq already read along with LISTEN's answer
            try:
                await lost
            except psycopg.Error as exc:
                log.warning("lost the ledger's change notifications; key checks all go to "
                            "the ledger until they are back: %s", exc)
        finally:
            self._pgconn = None
            self._cache.listening(False)
            if self._round_trip is not None and not self._round_trip.done():
                self._round_trip.set_result(None)  # nothing is cached to catch up with
            if fd >= 0:
                loop.remove_reader(fd)
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    def _read(self, pgconn: pq.abc.PGconn) -> None:
        pgconn.consume_input()
        answered = False
        if self._round_trip is not None:
            # Reading the answer also collects the notifications sent ahead of it.
            while not pgconn.is_busy():
                if pgconn.get_result() is None:
                    answered = True
                    break
        while (notice := pgconn.notifies()) is not None:
            self._heard(notice.extra)
        if answered and self._round_trip is not None and not self._round_trip.done():
            self._round_trip.set_result(None)

    def _heard(self, payload: bytes) -> None:
        text = payload.decode(errors="replace")
        try:
            change: Any = parse_change(text)
        except ValueError:
            log.warning("unreadable ledger notification %r; forgetting all cached checks",
                        text[:40])
            change = LedgerReset()
        self._cache.apply(change)
