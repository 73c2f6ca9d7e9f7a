"""Who a Coder token belongs to: Coder's answer to `GET /api/v2/users/me`, cached.

The limiter asks `TokenResolver.check(token)` for a credential that is not an agentmeter key.
Only strings shaped like Coder tokens are ever sent to Coder (a provider key pasted by mistake
never leaves the gateway); only a SHA-256 of the token is kept. An accepted answer is reused for
`coder.token_cache_seconds`; a refusal for `coder.refusal_cache_seconds`. While Coder cannot be
reached, an accepted answer keeps working for `coder.outage_grace_seconds` past its cache
period, and tokens never seen get `UNAVAILABLE`. Lookups of the same token share one call, and
at most `coder.max_lookups_in_flight` calls are open at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncEngine

from coder.client import CoderClient, CoderRefused, CoderUnreachable, User
from coder.settings import CoderSettings
from ledger.coder_identity import CoderUser, save_coder_user

# Coder API keys and session tokens are `<10 character id>-<22 character secret>`, both drawn
# from letters and digits (coderd/apikey: cryptorand.String(10) and (22)).
TOKEN_SHAPE = re.compile(r"[0-9A-Za-z]{10}-[0-9A-Za-z]{22}")
# Answers remembered at most; the oldest go first.
MAX_CACHED = 50_000
# After Coder failed to answer, cached tokens are served without asking again for this long.
RETRY_AFTER_FAILURE_SECONDS = 1.0


def looks_like_coder_token(credential: str) -> bool:
    return TOKEN_SHAPE.fullmatch(credential) is not None


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    # Accepted from the cache past its period because Coder cannot be reached.
    ACCEPTED_STALE = "accepted_stale"
    SUSPENDED = "suspended"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"


# The HTTP status the limiter answers with, per outcome.
HTTP_STATUS = {
    Outcome.ACCEPTED: 200,
    Outcome.ACCEPTED_STALE: 200,
    Outcome.SUSPENDED: 403,
    Outcome.REFUSED: 401,
    Outcome.UNAVAILABLE: 503,
}


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: int  # the ledger's
    username: str
    coder_id: str


@dataclass(frozen=True, slots=True)
class TokenCheck:
    outcome: Outcome
    identity: Identity | None
    # For a person: why the token was refused or could not be checked.
    message: str

    @property
    def accepted(self) -> bool:
        return self.identity is not None

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.outcome]


@dataclass(frozen=True, slots=True)
class _Entry:
    check: TokenCheck
    fresh_until: float
    usable_until: float  # past fresh_until only while Coder cannot be reached


SUSPENDED_MESSAGE = "your Coder account is suspended"
NOT_A_CODER_TOKEN = TokenCheck(Outcome.REFUSED, None, "unknown API key")
UNAVAILABLE = TokenCheck(Outcome.UNAVAILABLE, None,
                         "Coder cannot be reached to check this token; try again shortly")

def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenResolver:
    """Coder tokens to ledger identities; one per limiter process.

    `outcomes` counts every answer by outcome, every outcome present from the start (the
    limiter publishes it as `agentmeter_coder_token_lookups_total{outcome}`).
    """

    def __init__(self, settings: CoderSettings, client: CoderClient, engine: AsyncEngine,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._client = client
        self._engine = engine
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[_Entry | None]] = {}
        self._slots = asyncio.Semaphore(settings.max_lookups_in_flight)
        self._quiet_until = 0.0
        self.outcomes: Counter[Outcome] = Counter(dict.fromkeys(Outcome, 0))

    async def check(self, token: str) -> TokenCheck:
        """What the limiter answers for this credential. Raises what the ledger raises when a
        new user cannot be saved (the limiter treats that like any ledger outage)."""
        result = await self._check(token)
        self.outcomes[result.outcome] += 1
        return result

    async def _check(self, token: str) -> TokenCheck:
        if not looks_like_coder_token(token):
            return NOT_A_CODER_TOKEN
        key = _digest(token)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now < cached.fresh_until:
            self._cache.move_to_end(key)
            return cached.check
        if now < self._quiet_until:  # Coder just failed: do not queue behind it
            return self._stale(cached, now)
        entry = await self._lookup(key, token)
        if entry is None:
            return self._stale(cached, self._clock())
        return entry.check

    def _stale(self, cached: _Entry | None, now: float) -> TokenCheck:
        if cached is not None and cached.check.accepted and now < cached.usable_until:
            return TokenCheck(Outcome.ACCEPTED_STALE, cached.check.identity, "")
        return UNAVAILABLE

    async def _lookup(self, key: str, token: str) -> _Entry | None:
        """Coder's answer, shared by every caller asking about the same token meanwhile;
        None when Coder could not be reached."""
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Entry | None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            entry = await self._ask(token)
            if entry is not None:
                self._remember(key, entry)
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: the waiters re-raise it themselves
            raise
        finally:
            del self._in_flight[key]

    async def _ask(self, token: str) -> _Entry | None:
        settings = self._settings
        async with self._slots:
            try:
                user = await self._client.me(token)
            except CoderRefused as refused:
                # Coder answers a suspended user's token 401 `User is not active (status =
                # "suspended")`; that person gets 403 and is told why.
                if "suspended" in refused.message:
                    return self._refusal(Outcome.SUSPENDED, SUSPENDED_MESSAGE)
                return self._refusal(Outcome.REFUSED, "the Coder token is unknown or expired")
            except CoderUnreachable:
                self._quiet_until = self._clock() + RETRY_AFTER_FAILURE_SECONDS
                return None
        identity = await self._save(user)
        if user.suspended:
            return self._refusal(Outcome.SUSPENDED, SUSPENDED_MESSAGE)
        fresh = self._clock() + settings.token_cache_seconds
        return _Entry(TokenCheck(Outcome.ACCEPTED, identity, ""), fresh,
                      fresh + settings.outage_grace_seconds)

    def _refusal(self, outcome: Outcome, message: str) -> _Entry:
        until = self._clock() + self._settings.refusal_cache_seconds
        return _Entry(TokenCheck(outcome, None, message), until, until)

    async def _save(self, user: User) -> Identity:
        """The ledger's user for this Coder user, created on first sight."""
        coder_user = CoderUser(coder_id=user.id, username=user.username, name=user.name,
                               email=user.email, suspended=user.suspended)
        async with self._engine.begin() as conn:
            saved = await conn.run_sync(save_coder_user, coder_user)
        return Identity(user_id=saved.user_id, username=user.username, coder_id=user.id)

    def _remember(self, key: str, entry: _Entry) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
