"""A fake Coder API on a real port, answering in the JSON shapes of Coder's `codersdk`.

Tests add organisations, users, groups and tokens, then change them (rename, suspend, expire
a token, empty a group) and read how often Coder was asked. `close()` closes the listener (a
client then gets connection refused, as when Coder is down) and `start()` opens it again on the
same port. Given a TLS context it serves HTTPS as `localhost`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from coder.client import TOKEN_HEADER
from tests.support.local_server import LocalServer

_ALPHABET = string.ascii_letters + string.digits
EVERYONE = "Everyone"


def mint_token() -> str:
    """A token shaped like Coder's: 10 characters of id, a dash, 22 of secret."""
    return ("".join(secrets.choice(_ALPHABET) for _ in range(10)) + "-"
            + "".join(secrets.choice(_ALPHABET) for _ in range(22)))


@dataclass
class FakeUser:
    id: str
    username: str
    name: str
    email: str
    status: str = "active"
    organization_ids: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "name": self.name,
                "email": self.email, "avatar_url": "", "created_at": "2026-01-05T10:00:00Z",
                "updated_at": "2026-01-05T10:00:00Z", "last_seen_at": "2026-12-01T09:00:00Z",
                "status": self.status, "login_type": "password", "theme_preference": "",
                "organization_ids": list(self.organization_ids),
                "roles": [{"name": "member", "display_name": "Member"}]}

    def reduced(self) -> dict[str, Any]:
        body = self.json()
        del body["organization_ids"], body["roles"]
        return body


@dataclass
class FakeGroup:
    id: str
    name: str
    organization_id: str
    member_ids: list[str] = field(default_factory=list)


class FakeCoder(LocalServer):
    """State is plain attributes; the handlers read it on every request. `base_url` is Coder's
    access URL."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(tls=tls)
        self.organizations: dict[str, dict[str, Any]] = {}
        self.users: dict[str, FakeUser] = {}
        self.groups: dict[str, FakeGroup] = {}
        # token -> (user id, expiry on time.monotonic() or None)
        self.tokens: dict[str, tuple[str, float | None]] = {}
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        # Seconds /users/me waits before answering (to pile lookups up).
        self.me_delay = 0.0
        # When set, /users/me answers this status with an HTML error page (a proxy in front of
        # a Coder that is restarting).
        self.me_status: int | None = None
        self.default_org = self.add_organization("coder", default=True)

    # --- the test's side -----------------------------------------------------------------------

    def add_organization(self, name: str, default: bool = False) -> str:
        org_id = str(uuid.uuid4())
        self.organizations[org_id] = {
            "id": org_id, "name": name, "display_name": name.title(), "icon": "",
            "description": "", "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "is_default": default,
            "default_org_member_roles": []}
        return org_id

    def add_user(self, username: str, name: str = "", email: str = "",
                 status: str = "active", orgs: tuple[str, ...] = ()) -> FakeUser:
        user = FakeUser(str(uuid.uuid4()), username, name or username.title(),
                        email or f"{username}@example.com", status,
                        list(orgs or (self.default_org,)))
        self.users[user.id] = user
        return user

    def add_group(self, name: str, members: list[FakeUser], org: str | None = None) -> FakeGroup:
        group = FakeGroup(str(uuid.uuid4()), name, org or self.default_org,
                          [m.id for m in members])
        self.groups[group.id] = group
        return group

    def users_by_name(self, username: str) -> FakeUser:
        return next(u for u in self.users.values() if u.username == username)

    def token_for(self, user: FakeUser, lifetime_seconds: float | None = None) -> str:
        token = mint_token()
        expires = None if lifetime_seconds is None else time.monotonic() + lifetime_seconds
        self.tokens[token] = (user.id, expires)
        return token

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v2/users/me", self._me)
        app.router.add_get("/api/v2/users", self._users)
        app.router.add_get("/api/v2/organizations", self._organizations)
        app.router.add_get("/api/v2/organizations/{org}/groups", self._groups)
        return app

    # --- Coder's side --------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _caller(self, request: web.Request) -> FakeUser:
        token = request.headers.get(TOKEN_HEADER, "")
        owner = self.tokens.get(token)
        if owner is None:
            raise _error(401, "Invalid API key.")
        user_id, expires = owner
        if expires is not None and time.monotonic() >= expires:
            raise _error(401, "API key expired.")
        user = self.users.get(user_id)
        if user is None:
            raise _error(401, "API key is invalid.")
        if user.status == "suspended":
            raise _error(401, f'User is not active (status = "{user.status}"). '
                              "Contact an admin to reactivate your account.")
        return user

    async def _me(self, request: web.Request) -> web.Response:
        self._count("me")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.me_delay:
                await asyncio.sleep(self.me_delay)
            if self.me_status is not None:
                return web.Response(status=self.me_status, content_type="text/html",
                                    text="<html><body>Bad Gateway</body></html>")
            return web.json_response(self._caller(request).json())
        finally:
            self.in_flight -= 1

    async def _users(self, request: web.Request) -> web.Response:
        self._count("users")
        self._caller(request)
        everyone = sorted(self.users.values(), key=lambda u: u.username)
        limit = int(request.query.get("limit", "0") or 0)
        offset = int(request.query.get("offset", "0") or 0)
        page = everyone[offset:offset + limit] if limit else everyone[offset:]
        return web.json_response({"users": [u.json() for u in page], "count": len(everyone)})

    async def _organizations(self, request: web.Request) -> web.Response:
        self._count("organizations")
        self._caller(request)
        return web.json_response(list(self.organizations.values()))

    async def _groups(self, request: web.Request) -> web.Response:
        self._count("groups")
        self._caller(request)
        org = request.match_info["org"]
        if org not in self.organizations:
            raise _error(404, "Resource not found or you do not have access to this resource")
        members = [u for u in self.users.values() if org in u.organization_ids]
        everyone = FakeGroup(org, EVERYONE, org, [u.id for u in members])
        listed = [everyone, *(g for g in self.groups.values() if g.organization_id == org)]
        return web.json_response([self._group_json(g) for g in listed])

    def _group_json(self, group: FakeGroup) -> dict[str, Any]:
        members = [self.users[m].reduced() for m in group.member_ids if m in self.users]
        return {"id": group.id, "name": group.name, "display_name": group.name.title(),
                "organization_id": group.organization_id, "members": members,
                "total_member_count": len(members), "avatar_url": "", "quota_allowance": 0,
                "source": "user"}


def _error(status: int, message: str) -> web.HTTPException:
    cls = {401: web.HTTPUnauthorized, 404: web.HTTPNotFound}[status]
    return cls(text=json.dumps({"message": message, "detail": ""}),
               content_type="application/json")
