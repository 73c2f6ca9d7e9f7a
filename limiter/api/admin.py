"""Admin routes (admin token only): limits, overrides, the cost table and the per-user detail.

Changes made here last until the next `agentmeter apply`, which makes the ledger equal the
policy file again (its `--dry-run` shows them as differences).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import Connection

from ledger.catalog import models_without_pricing
from ledger.limit_store import (
    clear_group_limit,
    clear_user_override,
    load_limit_config,
    save_limit_config,
    set_group_limit,
    set_user_override,
)
from ledger.limits import GroupPolicy, LimitConfig
from ledger.money import MAX_MICROS, usd_to_micros
from ledger.periods import Period
from ledger.reports import (
    DEFAULT_PER_PAGE,
    DEFAULT_RANGE,
    MAX_PER_PAGE,
    CostTablePage,
    UsageTotals,
    UserDetail,
    cost_table,
    user_detail,
)
from limiter.admission.credentials import credential_of, is_admin
from limiter.api.status import status_view
from limiter.database import in_transaction
from limiter.http.app_keys import CHECK_CACHE, CLOCK, DATABASE, ENFORCER, ENGINE, SETTINGS
from limiter.http.errors import BadRequest
from limiter.relay.body import read_json_object
from limiter.timefmt import parse_instant, rfc3339

# Admin bodies are a few fields; nothing near an agent's context size.
MAX_ADMIN_BODY_BYTES = 64 * 1024
# Money columns are 64-bit integers of micro-dollars.

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _db(request: web.Request, fn: Callable[..., Any], *args: Any) -> Any:
    app = request.app
    return await in_transaction(app[ENGINE], app[DATABASE].connect_timeout_seconds, fn, *args)


async def _change(request: web.Request, fn: Callable[..., Any], *args: Any) -> Any:
    """`_db` for a change to what key checks read: this process forgets its cached checks at
    once (other processes hear the ledger's notification)."""
    result = await _db(request, fn, *args)
    request.app[CHECK_CACHE].reset()
    return result


def admin_only(handler: Handler) -> Handler:
    """401 without a credential or with an unknown one; 403 for a valid user's credential."""
    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        settings = request.app[SETTINGS]
        if not is_admin(request, settings):
            await request.app[ENFORCER].refuse_non_admin(credential_of(request, settings))
        return await handler(request)
    return guarded


# -- limits ----------------------------------------------------------------------------------

def _limits_view(conn: Connection) -> dict[str, Any]:
    config = load_limit_config(conn)
    gaps = models_without_pricing(conn)
    return {
        "enabled": config.enabled,
        "period": config.period.value,
        "default_limit_micros": config.default_limit_micros,
        "group_policy": config.group_policy.value,
        "models_without_pricing": len(gaps),
        "unpriced_models": [{"model": g.model, "reason": g.reason,
                             "missing": [k.value for k in g.missing_kinds]} for g in gaps],
    }


def _amount(body: dict[str, Any], micros_key: str, usd_key: str) -> tuple[bool, int | None]:
    """(given, micros) from `<x>_micros` or `<x>_usd`; null means "no limit"."""
    if micros_key in body and usd_key in body:
        raise BadRequest(f"Give `{micros_key}` or `{usd_key}`, not both.", code="invalid_body")
    if micros_key in body:
        value = body[micros_key]
        if value is None:
            return True, None
        if type(value) is not int:
            raise BadRequest(f"`{micros_key}` must be an integer (micro-dollars).",
                             code="invalid_body")
        if abs(value) > MAX_MICROS:
            raise _too_large(micros_key)
        return True, value
    if usd_key in body:
        value = body[usd_key]
        if value is None:
            return True, None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BadRequest(f"`{usd_key}` must be a decimal amount such as \"12.5\".",
                             code="invalid_body")
        return True, usd_to_micros(value)
    return False, None


def _too_large(key: str) -> BadRequest:
    return BadRequest(f"`{key}` is larger than the ledger can hold.", code="invalid_body")


def _choice(body: dict[str, Any], key: str, kind: Any) -> Any:
    try:
        return kind(body[key])
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise BadRequest(f"`{key}` must be one of {allowed}.", code="invalid_body") from None


def _unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"Unknown field(s): {', '.join(unknown)} (allowed: "
                         f"{', '.join(sorted(allowed))}).", code="invalid_body")


def _update_limits(conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
    current = load_limit_config(conn)
    enabled = body.get("enabled", current.enabled)
    if not isinstance(enabled, bool):
        raise BadRequest("`enabled` must be true or false.", code="invalid_body")
    period = _choice(body, "period", Period) if "period" in body else current.period
    policy = (_choice(body, "group_policy", GroupPolicy) if "group_policy" in body
              else current.group_policy)
    given, default = _amount(body, "default_limit_micros", "default_limit_usd")
    save_limit_config(conn, LimitConfig(
        enabled=enabled, period=period, group_policy=policy,
        default_limit_micros=default if given else current.default_limit_micros))
    return _limits_view(conn)


@admin_only
async def get_limits(request: web.Request) -> web.Response:
    return web.json_response(await _db(request, _limits_view))


@admin_only
async def put_limits(request: web.Request) -> web.Response:
    body = await read_json_object(request, MAX_ADMIN_BODY_BYTES,
                                  request.app[SETTINGS].client_body_timeout_seconds)
    _unknown_fields(body, {"enabled", "period", "group_policy", "default_limit_micros",
                           "default_limit_usd"})
    return web.json_response(await _change(request, _update_limits, body))


@admin_only
async def put_user_limit(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    body = await read_json_object(request, MAX_ADMIN_BODY_BYTES,
                                  request.app[SETTINGS].client_body_timeout_seconds)
    _unknown_fields(body, {"limit_micros", "limit_usd", "unlimited"})
    unlimited = body.get("unlimited", False)
    if not isinstance(unlimited, bool):
        raise BadRequest("`unlimited` must be true or false.", code="invalid_body")
    given, micros = _amount(body, "limit_micros", "limit_usd")
    if unlimited == (given and micros is not None):
        raise BadRequest("Give `limit_micros`, `limit_usd` or `\"unlimited\": true` (one of them).",
                         code="invalid_body")
    await _change(request, set_user_override, username, micros, unlimited)
    return web.json_response({"username": username, "limit_micros": micros,
                              "unlimited": unlimited})


@admin_only
async def delete_user_limit(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    removed = await _change(request, clear_user_override, username)
    return web.json_response({"username": username, "removed": bool(removed)})


@admin_only
async def put_group_limit(request: web.Request) -> web.Response:
    group = request.match_info["group"]
    body = await read_json_object(request, MAX_ADMIN_BODY_BYTES,
                                  request.app[SETTINGS].client_body_timeout_seconds)
    _unknown_fields(body, {"limit_micros", "limit_usd"})
    _, micros = _amount(body, "limit_micros", "limit_usd")
    if micros is None:
        raise BadRequest("Give `limit_micros` or `limit_usd` (a positive amount); DELETE "
                         "removes a group's limit.", code="invalid_body")
    await _change(request, set_group_limit, group, micros)
    return web.json_response({"group": group, "limit_micros": micros})


@admin_only
async def delete_group_limit(request: web.Request) -> web.Response:
    group = request.match_info["group"]
    removed = await _change(request, clear_group_limit, group)
    return web.json_response({"group": group, "removed": bool(removed)})


# -- usage -----------------------------------------------------------------------------------

def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadRequest(f"`{name}` must be an integer from {low} to {high}, got {raw!r}.",
                         code="invalid_parameter")
    return value


def _range(request: web.Request) -> tuple[datetime, datetime]:
    """`from`/`to` (RFC 3339 or a date); by default the last 30 days up to now."""
    now = request.app[CLOCK]()
    try:
        end = parse_instant(request.query["to"], "to") if request.query.get("to") else now
        start = (parse_instant(request.query["from"], "from") if request.query.get("from")
                 else end - DEFAULT_RANGE)
    except OverflowError:  # e.g. `0001-01-01T00:00:00+01:00`, or 30 days before year 1
        raise BadRequest("`from` and `to` must lie between the years 1 and 9999 in UTC.",
                         code="invalid_parameter") from None
    if end <= start:
        raise BadRequest("`to` must be after `from`.", code="invalid_parameter")
    if end - start > timedelta(days=3660):
        raise BadRequest("The range may span at most ten years.", code="invalid_parameter")
    return start, end


def _totals(totals: UsageTotals) -> dict[str, int]:
    return {
        "cost_micros": totals.cost_micros,
        "messages": totals.messages,
        "chats": totals.chats,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cache_read_tokens": totals.cache_read_tokens,
        "cache_write_tokens": totals.cache_write_tokens,
    }


def _cost_table_view(page: CostTablePage) -> dict[str, Any]:
    return {
        "from": rfc3339(page.start),
        "to": rfc3339(page.end),
        "page": page.page,
        "per_page": page.per_page,
        "total": page.total,
        "pages": -(-page.total // page.per_page),
        "users": [{"username": r.username, "name": r.name, **_totals(r.totals)}
                  for r in page.rows],
    }


@admin_only
async def usage_users(request: web.Request) -> web.Response:
    start, end = _range(request)
    page = _int_param(request, "page", 1, 1, 1_000_000)
    per_page = _int_param(request, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
    search = request.query.get("q", "").strip() or None
    table = await _db(request, cost_table, start, end, search, page, per_page)
    return web.json_response(_cost_table_view(table))


def _detail_view(detail: UserDetail) -> dict[str, Any]:
    limit = detail.limit
    return {
        "username": detail.username,
        "name": detail.name,
        "email": detail.email,
        "from": rfc3339(detail.start),
        "to": rfc3339(detail.end),
        "summary": _totals(detail.summary),
        "limit": {**status_view(limit), "utilization": limit.utilization},
        "models": [{"model": m.model, **_totals(m.totals), "web_searches": m.web_searches,
                    "prices": [{"price_id": p.price_id,
                                "effective_from": rfc3339(p.effective_from),
                                "source": p.source, "source_detail": p.source_detail,
                                "messages": p.messages, "cost_micros": p.cost_micros}
                               for p in m.prices]}
                   for m in detail.models],
        "chats": [{"chat": c.chat, "first_seen": c.first_seen.isoformat(),
                   "last_seen": c.last_seen.isoformat(), **_totals(c.totals)}
                  for c in detail.chats],
    }


@admin_only
async def usage_user(request: web.Request) -> web.Response:
    start, end = _range(request)
    detail = await _db(request, user_detail, request.match_info["username"], start, end,
                       request.app[CLOCK]())
    return web.json_response(_detail_view(detail))
