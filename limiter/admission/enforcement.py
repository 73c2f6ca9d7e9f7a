"""The check before forwarding: who is calling, and may they spend more this period?

A Coder token is first resolved to its user by `coder.tokens.TokenResolver` (which asks Coder,
or remembers its answer); its refusal is answered at once, and the user's limit is then read
from the ledger as for a trusted user.

Identity and limit status come from one transaction (one ledger round trip), or on PostgreSQL
from the check cache (`limiter.admission.check_cache`): a key's answer is kept at most
`check_cache_seconds` and only while the ledger's change notifications are heard, which bring
every committed spend, limit, key and group change of any limiter process into it; while they
cannot be heard every check goes to the ledger. SQLite ledgers are asked on every check.

When the check itself fails (the database is away) the request goes through with
`fail_mode: open` — counted and logged — or is answered 503 with `fail_mode: closed`. Strict
enforcement always fails closed: its promise (spend never passes the limit) cannot be kept
without the ledger.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from coder.tokens import TokenResolver
from ledger.catalog import Model
from ledger.money import format_usd
from ledger.periods import Period
from ledger.pricing import UnboundedWebSearches, cost_upper_bound
from ledger.reservations import reserve
from ledger.settings import DatabaseSettings
from ledger.spend import LimitStatus, check_key, limit_status
from limiter.admission.coder_tokens import refusal
from limiter.admission.credentials import Credential, unknown_key
from limiter.admission.identity import (
    FallbackIdentities,
    Identity,
    identify,
    key_owner_identity,
    not_admin,
    refuse_non_admin,
)
from limiter.admission.key_check import CheckResult, KeyChecker
from limiter.database import DATABASE_ERRORS, autocommitted, in_transaction, is_timeout
from limiter.http.errors import BadRequest, LimitExceeded, ServiceUnavailable
from limiter.metrics import LimiterMetrics
from limiter.settings import LimiterSettings
from limiter.timefmt import rfc3339

log = logging.getLogger("agentmeter.limiter")

# Strict mode needs an output bound; used when neither the request nor the model gives one.
FALLBACK_MAX_OUTPUT_TOKENS = 128_000
# Reservations outlive the slowest possible answer, then expire on their own.
RESERVATION_GRACE_SECONDS = 60.0
HOLD_TIMEOUT_FACTOR = 5


@dataclass(frozen=True, slots=True)
class Admission:
    identity: Identity
    # None when the check failed and the request was let through (fail-open).
    status: LimitStatus | None
    reservation_id: str | None = None

    @property
    def failed_open(self) -> bool:
        return self.status is None


# How the refusal names the period the spend and the limit belong to.
PERIOD_WORDS = {Period.DAY: "today", Period.WEEK: "this week", Period.MONTH: "this month"}


def limit_message(status: LimitStatus) -> str:
    """The refusal in words a person reads: the spend, the limit and when it resets."""
    limit = format_usd(status.limit_micros or 0)
    resets = status.period_end.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{LimitExceeded.default_message.removesuffix('.')}: "
            f"{format_usd(status.spent_micros)} of {limit} {PERIOD_WORDS[status.period]}; "
            f"resets {resets}.")


def limit_body(status: LimitStatus) -> dict[str, Any]:
    """The documented refusal body (the route adds its dialect's error object)."""
    return {
        "message": limit_message(status),
        "spent_micros": status.spent_micros,
        "limit_micros": status.limit_micros,
        "limit_source": status.limit_source.value,
        "resets_at": rfc3339(status.period_end),
    }


def retry_after_seconds(status: LimitStatus, now: datetime) -> int:
    return max(0, math.ceil((status.period_end - now).total_seconds()))


def strict_upper_bound(model: Model | None, body_bytes: int, max_tokens: int | None, *,
                       service_tier: str | None = None, speed: str | None = None,
                       web_searches: int | None = 0) -> int:
    """Most the request can cost under the model's prices in effect: every body byte an input
    token (so every tier its size can reach counts) at the dearest input price, at the service
    tier and speed asked for (no tier asked: the dearest the model has), plus up to
    `web_searches` searches (None: unbounded, refused with 400).
    """
    if model is None or model.prices is None:
        return 0  # unpriced traffic adds no spend
    output = max_tokens or model.max_output_tokens or FALLBACK_MAX_OUTPUT_TOKENS
    try:
        return cost_upper_bound(model.prices, body_bytes, output, service_tier=service_tier,
                                speed=speed, web_searches=web_searches)
    except UnboundedWebSearches as exc:
        raise BadRequest(str(exc), code="unbounded_web_searches") from exc


def check_status(conn: Connection, credential: Credential, now: datetime
                 ) -> tuple[Identity, LimitStatus]:
    """Who is calling and where they stand: for a key, one statement (one round trip)."""
    if credential.kind == "key":
        found = check_key(conn, credential.value, now)
        if found is None:
            raise unknown_key()
        owner, status = found
        return key_owner_identity(owner), status
    identity = identify(conn, credential)
    return identity, limit_status(conn, identity.user_id, now)


def _reason(exc: BaseException) -> str:
    return "timeout" if is_timeout(exc) else "database_error"


class Enforcer:
    def __init__(self, engine: AsyncEngine, settings: LimiterSettings,
                 database: DatabaseSettings, metrics: LimiterMetrics,
                 key_checker: KeyChecker | None = None,
                 coder: TokenResolver | None = None) -> None:
        self._engine = engine
        # With `coder.url` set: who a Coder token belongs to.
        self._coder = coder
        # PostgreSQL: keys are checked on the driver directly (see limiter.admission.key_check).
        self._key_checker = key_checker
        self._settings = settings
        self._timeout = database.connect_timeout_seconds
        # A hold writes and waits for the user's lock behind concurrent holds: give it longer.
        self._hold_timeout = database.connect_timeout_seconds * HOLD_TIMEOUT_FACTOR
        self._metrics = metrics
        self.fallback = FallbackIdentities(time.monotonic)

    @property
    def strict(self) -> bool:
        return self._settings.enforcement == "strict"

    def admit(self, credential: Credential, now: datetime) -> Awaitable[Admission]:
        """Identify the caller and refuse (`LimitExceeded`) when spend has reached the limit.

        A key's check is already on its way to the ledger when this returns: the caller can
        read the request body meanwhile, then awaits the admission before acting on the body
        (a refusal always comes first).
        """
        checker = self._key_checker
        if credential.kind != "key":
            return self._admit(credential, now, None)
        if checker is None:  # SQLite: every key check reads the ledger
            self._metrics.key_checks_by("ledger").inc()
            return self._admit(credential, now, None)
        return self._admit(credential, now, checker.start(credential.value, now, self._timeout))

    async def _admit(self, credential: Credential, now: datetime,
                     pending: Awaitable[CheckResult] | None) -> Admission:
        try:
            identity, status = await self._check(credential, now, pending)
        except DATABASE_ERRORS as exc:
            return Admission(self._fail_open(credential, exc), None)
        self.fallback.remember(credential, identity)
        if status.blocked:
            self._refuse(status, now)
        return Admission(identity, status)

    async def _check(self, credential: Credential, now: datetime,
                     pending: Awaitable[CheckResult] | None) -> tuple[Identity, LimitStatus]:
        if credential.kind == "coder":
            identity = await self.coder_identity(credential)
            return identity, await autocommitted(self._engine, self._timeout, limit_status,
                                                 identity.user_id, now)
        if pending is None:
            return await autocommitted(self._engine, self._timeout, check_status, credential,
                                       now)
        found = await pending  # bounded by the checker itself
        if found is None:
            raise unknown_key()
        owner, status = found
        return key_owner_identity(owner), status

    async def coder_identity(self, credential: Credential) -> Identity:
        """The ledger's user behind a Coder token (created on first sight), or the refusal
        (401, 403, 503). Raises what the ledger raises when a new user cannot be saved."""
        if self._coder is None:  # no `coder.url`: nothing can vouch for it
            raise unknown_key()
        checked = await self._coder.check(credential.value)
        if checked.identity is None:
            raise refusal(checked)
        return Identity(checked.identity.user_id, checked.identity.username)

    async def refuse_non_admin(self, credential: Credential) -> None:
        """Raise 403 for a known user's credential on an admin route; 401 (or Coder's
        refusal) for anything else."""
        if credential.kind == "coder":
            await self.coder_identity(credential)
            raise not_admin()
        await in_transaction(self._engine, self._timeout, refuse_non_admin, credential)

    async def status(self, credential: Credential, now: datetime) -> LimitStatus:
        """Where the caller stands (the status page: no fail-open)."""
        if credential.kind == "coder":
            identity = await self.coder_identity(credential)
            return await in_transaction(self._engine, self._timeout, limit_status,
                                        identity.user_id, now)
        _, status = await in_transaction(self._engine, self._timeout, check_status,
                                         credential, now)
        return status

    async def hold(self, admission: Admission, amount_micros: int, now: datetime) -> str | None:
        """Strict mode: reserve the request's upper bound, or refuse (`LimitExceeded`) if it
        does not fit.

        None when nothing needs holding (the user has no limit).
        """
        ttl = self._settings.upstream_timeout_seconds + RESERVATION_GRACE_SECONDS
        try:
            reservation_id, status = await in_transaction(
                self._engine, self._hold_timeout, reserve, admission.identity.user_id,
                amount_micros, now, ttl)
        except DATABASE_ERRORS as exc:
            raise self._unavailable(_reason(exc)) from exc
        if status.is_limited and reservation_id is None:
            self._refuse(status, now)
        return reservation_id

    async def identify(self, credential: Credential) -> Identity:
        """Only who is calling (no limit check), with the same fail-open rules."""
        try:
            if credential.kind == "coder":
                identity = await self.coder_identity(credential)
            else:
                identity = await in_transaction(self._engine, self._timeout, identify,
                                                credential)
        except DATABASE_ERRORS as exc:
            return self._fail_open(credential, exc)
        self.fallback.remember(credential, identity)
        return identity

    def _refuse(self, status: LimitStatus, now: datetime) -> NoReturn:
        self._metrics.blocked.labels(user=status.username).inc()
        retry_after = (retry_after_seconds(status, now) if self._settings.limit_retry_after
                       else None)
        raise LimitExceeded(limit_body(status), status=self._settings.limit_exceeded_status,
                            retry_after_seconds=retry_after)

    @staticmethod
    def _unavailable(reason: str) -> ServiceUnavailable:
        log.warning("limit check failed, refusing the request (fail closed): %s", reason)
        return ServiceUnavailable("The spend ledger is unreachable; try again shortly.",
                                  code="ledger_unavailable")

    def _fail_open(self, credential: Credential, exc: BaseException) -> Identity:
        """The identity to let through after a failed check, or 503 when that is not allowed."""
        reason = _reason(exc)
        if self.strict or self._settings.fail_mode == "closed":
            raise self._unavailable(reason) from exc
        identity = self.fallback.recall(credential)
        if identity is None:
            # Nobody to attribute the spend to: letting it through would lose the record.
            log.warning("limit check failed and the caller is not known from earlier "
                        "requests; refusing: %s", reason)
            raise ServiceUnavailable("The spend ledger is unreachable and this caller could "
                                     "not be identified; try again shortly.",
                                     code="ledger_unavailable")
        self._metrics.fail_open.labels(reason=reason).inc()
        log.warning("limit check failed, letting the request through (fail open): %s",
                    reason, extra={"user": identity.username, "reason": reason})
        return identity
