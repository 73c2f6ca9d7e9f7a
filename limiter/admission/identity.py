"""Who a credential belongs to, and the identities remembered for when the ledger is away.

Keys are looked up by hash (`limiter.admission.enforcement` asks the ledger or its check cache,
which forgets a key as soon as it is revoked). The last successful identities are remembered
only as a fallback for when the ledger is unreachable, so fail-open can still attribute (and
later record) the request; they are keyed by a hash of the credential, never by the key itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from ledger.keys import KeyOwner, authenticate_key
from ledger.users import ensure_user
from limiter.admission.credentials import Credential, unknown_key
from limiter.http.errors import Forbidden

# How long a remembered identity may stand in for the ledger while it is away.
FALLBACK_TTL_SECONDS = 3600.0
FALLBACK_MAX_ENTRIES = 10_000

@dataclass(frozen=True, slots=True)
class Identity:
    user_id: int
    username: str


def identify(conn: Connection, credential: Credential) -> Identity:
    """Resolve inside the caller's transaction (one round trip with the limit check).

    A Coder token is not resolved here (that asks Coder: `Enforcer`); here it is unknown.
    """
    if credential.kind == "trusted":
        user = ensure_user(conn, credential.value)
        return Identity(user.id, user.username)
    owner = authenticate_key(conn, credential.value) if credential.kind == "key" else None
    if owner is None:
        raise unknown_key()
    return key_owner_identity(owner)


def key_owner_identity(owner: KeyOwner) -> Identity:
    """The identity behind a valid key; 403 when `coder sync` marked its owner suspended."""
    if owner.suspended:
        raise Forbidden("This account is suspended; its keys cannot be used.",
                        code="account_suspended")
    return Identity(owner.user_id, owner.username)


def refuse_non_admin(conn: Connection, credential: Credential) -> None:
    """Raise 403 for a known user's credential on an admin route, 401 for anything else."""
    identify(conn, credential)
    raise not_admin()


def not_admin() -> Forbidden:
    return Forbidden("This route needs the admin token; a user key is not enough.")


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
