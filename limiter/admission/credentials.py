"""Who is calling: a virtual key, a trusted header, or the admin token.

This module is the one place that knows where credentials are read from (headers, the query).

Keys are stored and looked up only as hashes (`limiter.admission.enforcement` asks the ledger
or its check cache, which forgets a key as soon as it is revoked). The last successful
identities are remembered only as a fallback for when the ledger is unreachable, so fail-open
can still attribute (and later record) the request; they are keyed by a hash of the credential,
never by the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from sqlalchemy import Connection

from ledger.keys import authenticate_key
from ledger.schema import USER_TEXT_LENGTH
from ledger.users import ensure_user
from limiter.http.errors import BadRequest, Forbidden, Unauthorized
from limiter.settings import LimiterSettings

FORWARDED_USER = "X-Forwarded-User"
TRUSTED_SECRET = "X-Agentmeter-Secret"
# Headers that carry a key by themselves (besides `Authorization: Bearer`).
KEY_HEADERS = ("x-api-key", "x-goog-api-key")
# Every header the gateway reads a credential from: never forwarded upstream.
CREDENTIAL_HEADERS = frozenset({"authorization", *KEY_HEADERS,
                                FORWARDED_USER.lower(), TRUSTED_SECRET.lower()})
# Query parameters that carry a key (Gemini's `?key=`): removed before the query goes upstream.
CREDENTIAL_QUERY_PARAMETERS = frozenset({"key"})
# How long a remembered identity may stand in for the ledger while it is away.
FALLBACK_TTL_SECONDS = 3600.0
FALLBACK_MAX_ENTRIES = 10_000
# The ledger's users.username column holds this many characters.
MAX_USERNAME_LENGTH = USER_TEXT_LENGTH


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: int
    username: str


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request presents. Another kind (e.g. a Coder token, looked up asynchronously)
    is added here, in `credential_of` and where `identify` resolves each kind."""

    kind: Literal["key", "trusted"]
    value: str = ""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.kind}\0{self.value}".encode()).hexdigest()

    def __repr__(self) -> str:  # a key must never reach a log line through a repr
        return f"Credential(kind={self.kind!r})"


def _equal(given: str, expected: str) -> bool:
    # surrogateescape: undecodable header bytes compare as the bytes they were, never raise.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def presented_token(request: web.Request) -> str | None:
    """The key a client presents: `Authorization: Bearer <key>` (OpenAI style), `x-api-key`
    (Anthropic), `x-goog-api-key` or a `key` query parameter (Google), first found in that
    order."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for header in KEY_HEADERS:
        key = request.headers.get(header, "").strip()
        if key:
            return key
    for name in CREDENTIAL_QUERY_PARAMETERS:
        key = request.query.get(name, "").strip()
        if key:
            return key
    return None


def trusted_user(request: web.Request, settings: LimiterSettings) -> str | None:
    """X-Forwarded-User, but only next to the configured shared secret."""
    secret = settings.trusted_header_secret
    username = request.headers.get(FORWARDED_USER, "").strip()
    given = request.headers.get(TRUSTED_SECRET)
    if not secret or not username or given is None:
        return None
    return username if _equal(given, secret) else None


def credential_of(request: web.Request, settings: LimiterSettings) -> Credential:
    username = trusted_user(request, settings)
    if username is not None:
        return Credential("trusted", _checked_username(username))
    token = presented_token(request)
    if token is None:
        raise Unauthorized("Missing API key: send `Authorization: Bearer <key>` or "
                           "`x-api-key: <key>`.", code="missing_api_key")
    if not token.isprintable():  # undecodable header bytes: no key we issued looks like that
        raise unknown_key()
    return Credential("key", token)


def _checked_username(username: str) -> str:
    """A trusted username the ledger can store as it is (users are created on first sight)."""
    if len(username) > MAX_USERNAME_LENGTH:
        raise BadRequest(f"{FORWARDED_USER} is longer than {MAX_USERNAME_LENGTH} characters.",
                         code="invalid_forwarded_user")
    if not username.isprintable():
        raise BadRequest(f"{FORWARDED_USER} holds control characters or undecodable bytes.",
                         code="invalid_forwarded_user")
    return username


def identify(conn: Connection, credential: Credential) -> Identity:
    """Resolve inside the caller's transaction (one round trip with the limit check)."""
    if credential.kind == "trusted":
        user = ensure_user(conn, credential.value)
        return Identity(user.id, user.username)
    owner = authenticate_key(conn, credential.value)
    if owner is None:
        raise unknown_key()
    return Identity(owner.user_id, owner.username)


def unknown_key() -> Unauthorized:
    return Unauthorized("Unknown or revoked API key.", code="invalid_api_key")


def is_admin(request: web.Request, settings: LimiterSettings) -> bool:
    token = presented_token(request)
    return bool(settings.admin_token and token and _equal(token, settings.admin_token))


def refuse_non_admin(conn: Connection, credential: Credential) -> None:
    """Raise 403 for a known user's credential on an admin route, 401 for anything else."""
    identify(conn, credential)
    raise Forbidden("This route needs the admin token; a user key is not enough.")


class FallbackIdentities:
    """Recently confirmed identities, used only while the ledger cannot be asked."""

    def __init__(self, monotonic: Callable[[], float],
                 ttl_seconds: float = FALLBACK_TTL_SECONDS,
                 max_entries: int = FALLBACK_MAX_ENTRIES) -> None:
        self._monotonic = monotonic
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    def remember(self, credential: Credential, identity: Identity) -> None:
        key = credential.fingerprint
        self._entries[key] = (identity, self._monotonic() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def recall(self, credential: Credential) -> Identity | None:
        entry = self._entries.get(credential.fingerprint)
        if entry is None or entry[1] < self._monotonic():
            return None
        return entry[0]

    def forget(self, credential: Credential) -> None:
        self._entries.pop(credential.fingerprint, None)
