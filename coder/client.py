"""An async client of the parts of Coder's REST API agentmeter reads (shapes of `codersdk`).

Every request carries a token in the `Coder-Session-Token` header. Failures come out as two
exceptions: `CoderRefused` (Coder answered and said no: 401/403/404) and `CoderUnreachable`
(no answer, a timeout, a 5xx or a body that is not what `codersdk` sends).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from coder.settings import CoderSettings

TOKEN_HEADER = "Coder-Session-Token"
USERS_PAGE_SIZE = 100
# Coder's user statuses; a dormant user becomes active again by signing in, so only
# `suspended` is refused.
SUSPENDED = "suspended"


class CoderError(Exception):
    """Coder could not give the answer asked for."""


class CoderRefused(CoderError):
    """Coder answered and refused (the token is unknown, expired, or its user not active)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Coder answered {status}: {message}")
        self.status = status
        self.message = message


class CoderUnreachable(CoderError):
    """No usable answer from Coder: connection refused, timeout, 5xx, or an unreadable body."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    name: str
    email: str
    status: str
    organization_ids: tuple[str, ...] = ()

    @property
    def suspended(self) -> bool:
        return self.status == SUSPENDED


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    name: str
    is_default: bool


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    name: str
    organization_id: str
    member_ids: tuple[str, ...]

    @property
    def is_everyone(self) -> bool:
        """Each organisation's built-in group of all its members has the organisation's id."""
        return self.id == self.organization_id


def _user(data: Mapping[str, Any]) -> User:
    return User(id=str(data["id"]), username=str(data["username"]),
                name=str(data.get("name") or ""), email=str(data.get("email") or ""),
                status=str(data.get("status") or "active"),
                organization_ids=tuple(str(o) for o in data.get("organization_ids") or ()))


def _ssl_context(settings: CoderSettings) -> ssl.SSLContext | None:
    """Trust `coder.ca_file` (a PEM bundle) instead of the system's roots when it is set."""
    if not settings.ca_file:
        return None
    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"coder.ca_file {settings.ca_file}: {reason}") from None


class CoderClient:
    """One HTTP session to one Coder deployment; `close()` when done."""

    def __init__(self, settings: CoderSettings) -> None:
        if not settings.url:
            raise ValueError("coder.url is not set")
        self.base_url = settings.url.rstrip("/")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.request_timeout_seconds),
            connector=aiohttp.TCPConnector(ssl=_ssl_context(settings) or True),
            trust_env=True)

    async def close(self) -> None:
        await self._session.close()

    async def _get(self, path: str, token: str,
                   params: Mapping[str, str | int] | None = None) -> Any:
        try:
            async with self._session.get(self.base_url + path, params=params,
                                         headers={TOKEN_HEADER: token}) as response:
                if response.status in (401, 403, 404):
                    raise CoderRefused(response.status, await _message(response))
                if response.status != 200:
                    raise CoderUnreachable(f"{path}: Coder answered {response.status}: "
                                           f"{await _message(response)}")
                return await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise CoderUnreachable(f"{path}: {exc.__class__.__name__}: {exc}") from exc

    async def me(self, token: str) -> User:
        """The owner of `token` (`GET /api/v2/users/me`)."""
        try:
            return _user(await self._get("/api/v2/users/me", token))
        except (KeyError, TypeError, AttributeError) as exc:
            raise CoderUnreachable(f"/api/v2/users/me: unexpected answer: {exc!r}") from exc

    async def users(self, token: str) -> list[User]:
        """Every user, page by page (`GET /api/v2/users?limit=&offset=`)."""
        found: list[User] = []
        while True:
            page = await self._get("/api/v2/users", token,
                                   {"limit": USERS_PAGE_SIZE, "offset": len(found)})
            try:
                batch = [_user(u) for u in page["users"]]
                count = int(page.get("count", 0))
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise CoderUnreachable(f"/api/v2/users: unexpected answer: {exc!r}") from exc
            found.extend(batch)
            if len(batch) < USERS_PAGE_SIZE or len(found) >= count:
                return found

    async def organizations(self, token: str) -> list[Organization]:
        data = await self._get("/api/v2/organizations", token)
        try:
            return [Organization(id=str(o["id"]), name=str(o["name"]),
                                 is_default=bool(o.get("is_default"))) for o in data]
        except (KeyError, TypeError) as exc:
            raise CoderUnreachable(f"/api/v2/organizations: unexpected answer: {exc!r}") from exc

    async def groups(self, token: str, organization_id: str) -> list[Group]:
        """The organisation's groups with their members."""
        path = f"/api/v2/organizations/{organization_id}/groups"
        data = await self._get(path, token)
        try:
            return [Group(id=str(g["id"]), name=str(g["name"]),
                          organization_id=str(g["organization_id"]),
                          member_ids=tuple(str(m["id"]) for m in g.get("members") or ()))
                    for g in data]
        except (KeyError, TypeError) as exc:
            raise CoderUnreachable(f"{path}: unexpected answer: {exc!r}") from exc


async def _message(response: aiohttp.ClientResponse) -> str:
    """Coder's error body is `{"message": ..., "detail": ...}`; anything else is cut short."""
    try:
        body = await response.json(content_type=None)
        return str(body.get("message") or body)[:300]
    except (ValueError, AttributeError, aiohttp.ClientError):
        return (await response.text(errors="replace"))[:300]
