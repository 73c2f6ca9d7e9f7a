"""What a request presents: a virtual key, a Coder token, a trusted header, or the admin token.

This module is the one place that knows where credentials are read from (headers, the query);
`limiter.admission.identity` resolves them to a user. Keys are stored and looked up only as
hashes, and a credential's repr never shows its value.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from coder.client import TOKEN_HEADER as CODER_TOKEN_HEADER
from coder.tokens import looks_like_coder_token
from ledger.keys import KEY_PREFIX
from ledger.schema import USER_TEXT_LENGTH
from limiter.http.errors import BadRequest, Unauthorized
from limiter.settings import LimiterSettings

FORWARDED_USER = "X-Forwarded-User"
TRUSTED_SECRET = "X-Agentmeter-Secret"
# Headers that carry a key by themselves (besides `Authorization: Bearer`); Coder's own header
# is what a Coder workspace's tools send its owner's session token in.
KEY_HEADERS = ("x-api-key", "x-goog-api-key", CODER_TOKEN_HEADER.lower())
# Every header the gateway reads a credential from: never forwarded upstream.
CREDENTIAL_HEADERS = frozenset({"authorization", *KEY_HEADERS,
                                FORWARDED_USER.lower(), TRUSTED_SECRET.lower()})
# Query parameters that carry a key (Gemini's `?key=`): removed before the query goes upstream.
CREDENTIAL_QUERY_PARAMETERS = frozenset({"key"})
# The ledger's users.username column holds this many characters.
MAX_USERNAME_LENGTH = USER_TEXT_LENGTH


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request presents. A key and a trusted user are resolved to a user in
    `limiter.admission.identity.identify`; a Coder token needs an asynchronous lookup (asking
    Coder), done by `Enforcer` before the ledger is asked for the limit."""

    kind: Literal["key", "coder", "trusted"]
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
    (Anthropic), `x-goog-api-key` (Google), `Coder-Session-Token` (Coder) or a `key` query
    parameter (Google), first found in that order."""
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
    if not token.startswith(KEY_PREFIX) and looks_like_coder_token(token):
        return Credential("coder", token)
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


def unknown_key() -> Unauthorized:
    return Unauthorized("Unknown or revoked API key.", code="invalid_api_key")


def is_admin(request: web.Request, settings: LimiterSettings) -> bool:
    token = presented_token(request)
    return bool(settings.admin_token and token and _equal(token, settings.admin_token))
