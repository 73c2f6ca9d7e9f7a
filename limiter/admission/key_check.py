"""The key check on PostgreSQL, run on libpq without the driver's layers.

The check is one statement (`ledger.spend.check_key`) and it sits on the critical path of
every request that the check cache (limiter.admission.check_cache) cannot answer: a key's
first, and any
after a change to limits or keys. Through SQLAlchemy's async engine it cost about 0.65 ms of
CPU per call on the 2-core benchmark machine, through psycopg's async cursor about 0.16 ms
(0.25 ms in the running gateway, where other processes keep the caches cold). So the limiter
compiles the ledger's own statement once (the SQL stays defined in one place), prepares it on
each connection and runs it on the connection's libpq handle directly: the parameters are
encoded once per UTC day except the key's hash, the request is one non-blocking send, the
answer is read when the socket is readable, and the row is decoded by column type.

Connections are opened by psycopg (so every libpq connection option, password method and TLS
mode works as it does for the rest of the ledger) and kept in a small pool of their own: idle
ones are reused, new ones are opened on demand up to `size`, and one that failed or was
interrupted mid-statement is closed rather than reused. A stopped database therefore fails a
check at once (connection refused) instead of making it wait for a pool's background
reconnection, and fail-open stays as quick as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque, namedtuple
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import errors, pq
from sqlalchemy.dialects import postgresql

from ledger.engine import application_name_args, is_sqlite, libpq_url
from ledger.keys import KeyOwner, hash_key
from ledger.settings import DatabaseSettings
from ledger.spend import LimitStatus, check_key_params, check_key_result, check_key_statement
from limiter.admission.check_cache import CheckCache
from limiter.admission.deadline import wait_within
from limiter.metrics import LimiterMetrics

STATEMENT_NAME = b"agentmeter_check_key"
# How the check's connections show in pg_stat_activity.
APPLICATION_NAME = "agentmeter-limiter-check"
CheckResult = tuple[KeyOwner, LimitStatus] | None

# Text-format decoders for the column types the statement returns, by type OID.
_DECODERS: dict[int, Callable[[bytes], Any]] = {
    16: lambda v: v == b"t",  # boolean
    20: int, 21: int, 23: int,  # int8, int2, int4
    25: bytes.decode, 1043: bytes.decode, 19: bytes.decode,  # text, varchar, name
}


def _encode(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text format (the statement casts every parameter)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, date | datetime):
        return value.isoformat().encode()
    return str(value).encode()


class _Connection:
    """One ledger connection with the statement prepared, running one check at a time.

    Its socket stays registered with the event loop for as long as it is open: the answer to a
    check is read as it arrives, and a connection the server closes while idle (restart,
    `pg_terminate_backend`) is noticed and dropped before a check is sent on it.
    """

    __slots__ = ("_conn", "_fd", "_first", "_loop", "_on_broken", "_pgconn", "_waiter",
                 "broken")

    def __init__(self, conn: psycopg.AsyncConnection[Any], loop: asyncio.AbstractEventLoop,
                 on_broken: Callable[[_Connection], None]) -> None:
        self._conn = conn
        self._pgconn = conn.pgconn
        self._fd = self._pgconn.socket
        self._loop = loop
        self._on_broken = on_broken
        self._waiter: asyncio.Future[pq.abc.PGresult] | None = None
        self._first: pq.abc.PGresult | None = None
        self.broken = False
        loop.add_reader(self._fd, self._on_readable)

    def send(self, params: list[bytes | None]) -> asyncio.Future[pq.abc.PGresult]:
        """Send the check; the future gets its first result (or a psycopg error)."""
        pgconn = self._pgconn
        pgconn.send_query_prepared(STATEMENT_NAME, params)
        if pgconn.flush():  # the send buffer is full (rare for one small message)
            self._loop.add_writer(self._fd, self._on_writable)
        waiter = self._waiter = self._loop.create_future()
        return waiter

    def _on_writable(self) -> None:
        try:
            if self._pgconn.flush():
                return
        except psycopg.Error as exc:
            self._fail(exc)  # closes, which unregisters the socket too
            return
        self._loop.remove_writer(self._fd)

    def _on_readable(self) -> None:
        pgconn = self._pgconn
        try:
            pgconn.consume_input()
            while self._waiter is not None and not pgconn.is_busy():
                result = pgconn.get_result()
                if result is not None:
                    if self._first is None:
                        self._first = result
                    continue
                # The statement's results are complete.
                first, self._first = self._first, None
                waiter, self._waiter = self._waiter, None
                if first is None:
                    raise psycopg.OperationalError("the ledger returned no result")
                if not waiter.done():
                    waiter.set_result(first)
        except psycopg.Error as exc:
            self._fail(exc)

    def _fail(self, exc: psycopg.Error) -> None:
        """The connection is unusable: fail the check in flight, if any, and let the pool know."""
        self.close(exc)
        self._on_broken(self)

    def close(self, reason: psycopg.Error | None = None) -> None:
        """Close the connection; a check still in flight fails with `reason`."""
        waiter, self._waiter, self._first = self._waiter, None, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(reason or psycopg.OperationalError(
                "the key check's ledger connection was closed"))
        if self.broken:
            return
        self.broken = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._pgconn.finish()


class KeyChecker:
    """`check_key` on a pool of libpq connections (PostgreSQL ledgers only), answered from the
    cache (limiter.admission.check_cache) instead when it holds the key's answer."""

    def __init__(self, settings: DatabaseSettings, cache: CheckCache | None = None,
                 metrics: LimiterMetrics | None = None) -> None:
        dialect = postgresql.psycopg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        compiled = check_key_statement().compile(dialect=dialect)
        self._sql = str(compiled)
        # Parameter names in $1..$n order, and the literals SQLAlchemy made parameters of.
        self._names: list[str] = list(compiled.positiontup or ())
        self._fixed: dict[str, Any] = dict(compiled.params)
        self._key_slot = self._names.index("key_hash")
        # The caller's binds other than the key's hash: the period starts, new once a UTC day.
        self._daily = tuple(name for name in self._names
                            if self._fixed.get(name) is None and name != "key_hash")
        self._url = libpq_url(settings.url)
        self._client = application_name_args(settings.url, APPLICATION_NAME)
        self._connect_timeout = max(1, round(settings.connect_timeout_seconds))
        self._size = settings.pool_size
        # Pool: idle connections, every open one, and checks waiting for one to be free.
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._connecting = 0
        # Each waiter gets a connection handed over, or None: a slot is free to open one.
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        # The encoded parameters of the period starts last seen (they change once a day).
        self._params_for: tuple[Any, ...] = ()
        self._params: list[bytes | None] = []
        self._row_type: Callable[..., Any] | None = None
        self._decoders: list[Callable[[bytes], Any]] = []
        # Answers remembered while the ledger's changes are heard (limiter.admission.check_cache).
        self._cache = cache if cache is not None else CheckCache(0)
        self._from_cache = metrics.key_checks_by("cache") if metrics else None
        self._from_ledger = metrics.key_checks_by("ledger") if metrics else None

    @staticmethod
    def supports(settings: DatabaseSettings) -> bool:
        return not is_sqlite(settings.url)

    def start(self, secret: str, now: datetime,
              timeout_s: float | None = None) -> Awaitable[CheckResult]:
        """The cached answer, or send the check now if a connection is idle; await the result
        when it is needed.

        The caller can do other work while the ledger answers. Errors (the ledger cannot
        answer: psycopg errors, OSError) are raised when the result is awaited, TimeoutError
        when that wait takes longer than `timeout_s` (None: no limit). The connection goes back
        to the pool when the answer arrives, awaited or not; it is dropped when the answer
        came too late. The returned coroutine must still be awaited or closed.
        """
        key_hash = hash_key(secret)
        cache = self._cache
        if cache.active:
            found = cache.get(key_hash, now)
            if found is not None:
                if self._from_cache is not None:
                    self._from_cache.inc()
                return _ready(found)
        if self._from_ledger is not None:
            self._from_ledger.inc()
        asked = _Asked(key_hash, now, cache.generation)
        params = self._encoded(key_hash, now)
        if not self._idle:
            return self._check(params, asked, timeout_s)
        conn = self._idle.pop()
        try:
            sent = conn.send(params)
        except psycopg.Error as exc:
            self._drop(conn)
            return _raise(exc)
        sent.add_done_callback(lambda done: self._settle(conn, done))
        return self._result(sent, asked, timeout_s)

    async def check(self, secret: str, now: datetime,
                    timeout_s: float | None = None) -> CheckResult:
        """The key's owner and status; None for an unknown or revoked key."""
        return await self.start(secret, now, timeout_s)

    async def _check(self, params: list[bytes | None], asked: _Asked,
                     timeout_s: float | None) -> CheckResult:
        """No idle connection: wait for one (or open one), then check; all within the time."""
        async with asyncio.timeout(timeout_s):
            conn = await self._acquire()
            try:
                sent = conn.send(params)
            except BaseException:
                self._drop(conn)
                raise
            sent.add_done_callback(lambda done: self._settle(conn, done))
            return await self._result(sent, asked, None)

    async def _result(self, sent: asyncio.Future[pq.abc.PGresult], asked: _Asked,
                      timeout_s: float | None) -> CheckResult:
        result = await wait_within(sent, timeout_s)
        try:
            found = check_key_result(self._row(result), asked.now)
        finally:
            result.clear()
        if found is None:
            return None
        owner, status = found
        return owner, self._cache.remember(asked.key_hash, owner, status, asked.generation)

    def _settle(self, conn: _Connection, sent: asyncio.Future[pq.abc.PGresult]) -> None:
        """A check ended: its connection is idle again, or dropped if the check failed or was
        cancelled mid-statement (its state is unknown then)."""
        if sent.cancelled() or sent.exception() is not None or conn.broken:
            self._drop(conn)
        else:
            self._release(conn)

    def _release(self, conn: _Connection) -> None:
        """Hand the connection to the longest-waiting check, or keep it idle."""
        if not self._hand_over(conn):
            self._idle.append(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        if conn in self._idle:
            self._idle.remove(conn)
        if conn in self._open:
            self._open.discard(conn)
            self._hand_over(None)  # a waiting check may open a connection in its place

    def _hand_over(self, conn: _Connection | None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def _acquire(self) -> _Connection:
        """An idle connection, a new one while fewer than `size` are open, else the next one
        to be free (in the order the checks asked)."""
        while True:
            if self._idle:
                return self._idle.pop()
            if len(self._open) + self._connecting < self._size:
                return await self._connect()
            waiter: asyncio.Future[_Connection | None] = \
                asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # handed over, then cancelled
                    handed = waiter.result()
                    if handed is None:
                        self._hand_over(None)
                    else:
                        self._release(handed)
                raise
            if handed is not None:
                return handed

    async def _connect(self) -> _Connection:
        self._connecting += 1
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=self._connect_timeout,
                **self._client)
            try:
                await conn.execute(f"PREPARE {STATEMENT_NAME.decode()} AS {self._sql}")
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.close()
                raise
        except BaseException:
            self._connecting -= 1
            self._hand_over(None)  # the slot is free again for a waiting check
            raise
        self._connecting -= 1
        checked = _Connection(conn, asyncio.get_running_loop(), self._drop)
        self._open.add(checked)
        return checked

    def _encoded(self, key_hash: str, now: datetime) -> list[bytes | None]:
        values = check_key_params(key_hash, now)
        starts = tuple(values[name] for name in self._daily)
        if starts != self._params_for:
            merged = {**self._fixed, **values}
            self._params = [_encode(merged[name]) for name in self._names]
            self._params_for = starts
        params = self._params.copy()
        params[self._key_slot] = _encode(values["key_hash"])
        return params

    def _row(self, result: pq.abc.PGresult) -> Any:
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise _error(result)
        if result.ntuples == 0:
            return None
        if self._row_type is None:
            self._row_type, self._decoders = _row_shape(result)
        values = []
        for column, decode in enumerate(self._decoders):
            value = result.get_value(0, column)
            values.append(None if value is None else decode(value))
        return self._row_type(*values)

    async def close(self) -> None:
        for conn in list(self._open):
            self._drop(conn)
        self._idle.clear()


class _Asked(NamedTuple):
    """A check sent to the ledger: for which key, when, and the cache's generation then."""

    key_hash: str
    now: datetime
    generation: int


async def _raise(exc: BaseException) -> CheckResult:
    raise exc


async def _ready(found: CheckResult) -> CheckResult:
    return found


def _row_shape(result: pq.abc.PGresult) -> tuple[Callable[..., Any],
                                                  list[Callable[[bytes], Any]]]:
    """A row type named like the statement's columns, and each column's decoder."""
    names, decoders = [], []
    for column in range(result.nfields):
        name = (result.fname(column) or b"").decode()
        oid = result.ftype(column)
        decoder = _DECODERS.get(oid)
        if decoder is None:
            raise TypeError(f"the key check cannot decode column {name!r} (type oid {oid})")
        names.append(name)
        decoders.append(decoder)
    return namedtuple("CheckRow", names), decoders  # type: ignore[misc]


def _error(result: pq.abc.PGresult) -> psycopg.Error:
    """The psycopg exception class for the server's error (by SQLSTATE)."""
    message = (result.error_message or b"").decode(errors="replace").strip()
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    try:
        cls = errors.lookup(sqlstate.decode()) if sqlstate else psycopg.OperationalError
    except KeyError:
        cls = psycopg.DatabaseError
    return cls(message or "the ledger refused the key check")
