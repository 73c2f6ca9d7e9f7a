"""`agentmeter coder import`: the way off Coder's retired native chat usage limits.

Reads a Coder database read-only — the limit configuration row (`chat_usage_limit_config`),
per-user and per-group spend limits (`users.chat_spend_limit_micros` and
`groups.chat_spend_limit_micros`, or the later `chat_user_spend_limits` /
`chat_group_spend_limits` tables), the model configurations with their prices
(`chat_model_configs`, `cost` inside its JSON options) — and writes a policy file that
reproduces them. With a start date it also copies the chat messages' tokens and costs into the
ledger under ids `coder-chat-message:<id>` (a second import adds nothing), each recorded with
the cost Coder recorded: that is what the user was billed, so current spend carries over.

Coder's resolution, which the written policy reproduces: limits disabled → none; the user's
own limit; else the lowest limit among the user's groups (including each organisation's
"Everyone" group); else the default, where a default of 0 means no default.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Engine

from coder.client import Group, Organization
from coder.sync import ledger_group_name
from ledger.coder_identity import CoderUser, save_coder_user
from ledger.errors import InvalidValue
from ledger.money import MICROS_PER_USD, usd_to_micros
from ledger.policy_file import PROVIDERS
from ledger.price_catalog import find_catalog_model
from ledger.tokens import TokenUsage
from ledger.usage import BilledCost, UsageRecord, record_usage_batch

MESSAGE_ID_PREFIX = "coder-chat-message:"
CHAT_ID_PREFIX = "coder-chat:"
# Coder's price keys inside a model configuration's `cost`, and the policy's names for them.
PRICE_KEYS = {
    "input_price_per_million_tokens": "input",
    "output_price_per_million_tokens": "output",
    "cache_read_price_per_million_tokens": "cache_read",
    "cache_write_price_per_million_tokens": "cache_write",
}
BATCH = 500


class NotACoderDatabase(ValueError):
    """The database lacks the tables of Coder's native chat usage limits."""


def connect_read_only(url: str) -> psycopg.Connection[dict[str, Any]]:
    """A connection that cannot write: every transaction on it is READ ONLY."""
    from ledger.engine import libpq_url

    return psycopg.connect(libpq_url(url), row_factory=dict_row, connect_timeout=10,
                           options="-c default_transaction_read_only=on")


@dataclass
class NativeLimits:
    """Coder's limits and models as the policy file will state them."""

    enabled: bool
    period: str
    default_limit_micros: int
    users: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    # Everything that could not be carried, for stderr.
    notes: list[str] = field(default_factory=list)


def _columns(conn: psycopg.Connection[dict[str, Any]], table: str) -> set[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = %s", (table,))
    return {row["column_name"] for row in rows}


def _usd(micros: int) -> str:
    return str(Decimal(micros) / MICROS_PER_USD)


def _user_limits_sql(conn: psycopg.Connection[dict[str, Any]], user_columns: set[str]) -> str:
    live = [f"u.{c} = false" for c in ("deleted", "is_system") if c in user_columns]
    where = f"WHERE {' AND '.join(live)}" if live else ""
    if _columns(conn, "chat_user_spend_limits"):
        return ("SELECT u.id, u.username, u.name, u.email, u.status, l.spend_limit_micros AS "
                "limit_micros FROM users u LEFT JOIN chat_user_spend_limits l ON l.user_id = "
                f"u.id {where} ORDER BY u.username")
    return ("SELECT u.id, u.username, u.name, u.email, u.status, u.chat_spend_limit_micros AS "
            f"limit_micros FROM users u {where} ORDER BY u.username")


def _group_limits_sql(conn: psycopg.Connection[dict[str, Any]]) -> str:
    if _columns(conn, "chat_group_spend_limits"):
        return ("SELECT g.id, g.name, g.organization_id, l.spend_limit_micros AS limit_micros "
                "FROM groups g JOIN chat_group_spend_limits l ON l.group_id = g.id "
                "WHERE l.spend_limit_micros IS NOT NULL ORDER BY g.name")
    return ("SELECT g.id, g.name, g.organization_id, g.chat_spend_limit_micros AS limit_micros "
            "FROM groups g WHERE g.chat_spend_limit_micros IS NOT NULL ORDER BY g.name")


def _pricing(name: str, cost: Any, notes: list[str]) -> dict[str, str] | None:
    """The policy's explicit prices from Coder's, or None where Coder has none usable (the
    note says so; `_unpriced_in_coder` decides what the policy declares instead)."""
    if not isinstance(cost, dict):
        notes.append(f"model {name}: no price in Coder")
        return None
    pricing: dict[str, str] = {}
    for key, kind in PRICE_KEYS.items():
        value = cost.get(key)
        if value in (None, ""):
            continue
        try:
            usd_to_micros(value)
        except InvalidValue as exc:
            notes.append(f"model {name}: {key} {value!r} cannot be read ({exc})")
            return None
        pricing[kind] = format(Decimal(str(value)).normalize(), "f")  # "100", never "1E+2"
    if "input" not in pricing and "output" not in pricing:
        notes.append(f"model {name}: no input or output price in Coder")
        return None
    return pricing


def _models(conn: psycopg.Connection[dict[str, Any]], native: NativeLimits) -> None:
    columns = _columns(conn, "chat_model_configs")
    options = "options" if "options" in columns else "model_config"
    live = "WHERE deleted = false" if "deleted" in columns else ""
    seen: set[str] = set()
    for row in conn.execute(f"SELECT model, provider, enabled, {options} AS options "
                            f"FROM chat_model_configs {live} ORDER BY model, provider"):
        name, provider = row["model"], row["provider"]
        if provider not in PROVIDERS:
            native.notes.append(f"model {name}: provider {provider} is not routed by "
                                "agentmeter; not carried")
            continue
        if name in seen:
            native.notes.append(f"model {name}: also configured for {provider}; only the "
                                "first is carried")
            continue
        seen.add(name)
        settings = row["options"] if isinstance(row["options"], dict) else {}
        model: dict[str, Any] = {"name": name, "provider": provider,
                                 "enabled": bool(row["enabled"])}
        max_output = settings.get("max_output_tokens")
        if isinstance(max_output, int) and max_output > 0:
            model["max_output_tokens"] = max_output
        pricing = _pricing(name, settings.get("cost"), native.notes)
        if pricing is not None:
            model["pricing"] = pricing
        elif find_catalog_model(provider, name) is not None:
            native.notes.append(f"model {name}: priced from the genai-prices catalog instead")
        else:
            # Never free by accident: say in the file that it is unpriced on purpose.
            model["pricing"] = "none"
            native.notes.append(f"model {name}: not in the price catalog either; declared "
                                "with pricing: none (its traffic is counted as unpriced)")
        native.models.append(model)


def read_native_limits(conn: psycopg.Connection[dict[str, Any]]) -> NativeLimits:
    """Coder's limit configuration, user and group limits, and models with their prices."""
    if not _columns(conn, "chat_usage_limit_config"):
        raise NotACoderDatabase("no chat_usage_limit_config table: not a Coder database with "
                                "native chat usage limits (Coder 2.35 or earlier)")
    config = conn.execute("SELECT enabled, default_limit_micros, period "
                          "FROM chat_usage_limit_config ORDER BY id LIMIT 1").fetchone()
    if config is None:
        config = {"enabled": False, "default_limit_micros": 0, "period": "month"}
    native = NativeLimits(enabled=bool(config["enabled"]), period=str(config["period"]),
                          default_limit_micros=int(config["default_limit_micros"] or 0))

    people = list(conn.execute(_user_limits_sql(conn, _columns(conn, "users"))))
    usernames = {str(u["id"]): u["username"] for u in people}
    listed: set[str] = set()
    organizations = {str(o["id"]): Organization(str(o["id"]), o["name"], bool(o["is_default"]))
                     for o in conn.execute("SELECT id, name, is_default FROM organizations")}
    for row in conn.execute(_group_limits_sql(conn)).fetchall():
        group_id, org_id = str(row["id"]), str(row["organization_id"])
        if group_id == org_id:  # the organisation's "Everyone": every member of it
            members = conn.execute("SELECT user_id FROM organization_members "
                                   "WHERE organization_id = %s", (row["id"],)).fetchall()
            native.notes.append(f"group {row['name']} of {organizations[org_id].name}: written "
                                "with its current members (coder sync does not copy "
                                "Everyone groups; keep its members in the policy)")
        else:
            members = conn.execute("SELECT user_id FROM group_members WHERE group_id = %s",
                                   (row["id"],)).fetchall()
        names = sorted(usernames[str(m["user_id"])] for m in members
                       if str(m["user_id"]) in usernames)
        listed.update(names)
        native.groups.append({
            "name": ledger_group_name(Group(group_id, row["name"], org_id, ()), organizations),
            "limit_usd": _usd(int(row["limit_micros"])), "members": names})
    for user in people:
        if user["limit_micros"] is None and user["username"] not in listed:
            continue
        entry: dict[str, Any] = {"username": user["username"], "name": user["name"] or "",
                                 "email": user["email"] or ""}
        if user["limit_micros"] is not None:
            entry["limit_usd"] = _usd(int(user["limit_micros"]))
        native.users.append(entry)
    _models(conn, native)
    return native


def policy_document(native: NativeLimits) -> dict[str, Any]:
    """The policy file (as YAML-ready data) that gives every user Coder's effective limit."""
    limits: dict[str, Any] = {"enabled": native.enabled, "period": native.period,
                              "group_policy": "lowest"}
    if native.default_limit_micros > 0:
        limits["default_limit_usd"] = _usd(native.default_limit_micros)
    return {"limits": limits, "groups": native.groups, "users": native.users,
            "models": native.models}


@dataclass(frozen=True)
class CopiedUsage:
    messages: int  # new in the ledger
    already: int  # copied by an earlier import
    cost_micros: int  # of the new ones


def _messages(conn: psycopg.Connection[dict[str, Any]], since: datetime
              ) -> Iterator[dict[str, Any]]:
    users = _columns(conn, "users")
    email = "u.email" if "email" in users else "''"
    with conn.cursor(name="agentmeter_coder_import") as cursor:
        cursor.execute(
            "SELECT cm.id, cm.chat_id, cm.created_at, cm.input_tokens, cm.output_tokens, "
            "cm.cache_creation_tokens, cm.cache_read_tokens, cm.total_cost_micros, "
            "mc.model, mc.provider, u.id AS owner_id, u.username, u.name, "
            f"{email} AS email, u.status "
            "FROM chat_messages cm JOIN chats c ON c.id = cm.chat_id "
            "JOIN users u ON u.id = c.owner_id "
            "LEFT JOIN chat_model_configs mc ON mc.id = cm.model_config_id "
            "WHERE cm.created_at >= %s AND (cm.total_cost_micros IS NOT NULL "
            "OR cm.input_tokens IS NOT NULL OR cm.output_tokens IS NOT NULL) "
            "ORDER BY cm.created_at, cm.id", (since,))
        yield from cursor


def _record(row: dict[str, Any], user_id: int) -> UsageRecord:
    usage = TokenUsage(input=row["input_tokens"] or 0, output=row["output_tokens"] or 0,
                       cache_read=row["cache_read_tokens"] or 0,
                       cache_write=row["cache_creation_tokens"] or 0)
    return UsageRecord(
        id=f"{MESSAGE_ID_PREFIX}{row['id']}", user_id=user_id,
        model=row["model"] or "coder-unknown-model", provider=row["provider"] or "unknown",
        usage=usage, created_at=row["created_at"], chat=f"{CHAT_ID_PREFIX}{row['chat_id']}",
        billed=BilledCost(row["total_cost_micros"]))


def copy_usage(conn: psycopg.Connection[dict[str, Any]], ledger: Engine,
               since: datetime) -> CopiedUsage:
    """Copy the chat messages created at or after `since` into the ledger, idempotently."""
    owners: dict[str, int] = {}
    new = already = cost = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal new, already, cost
        with ledger.begin() as ledger_conn:
            for row in batch:
                owner = str(row["owner_id"])
                if owner not in owners:
                    saved = save_coder_user(ledger_conn, CoderUser(
                        coder_id=owner, username=row["username"], name=row["name"] or "",
                        email=row["email"] or "", suspended=row["status"] == "suspended"))
                    owners[owner] = saved.user_id
            results = record_usage_batch(ledger_conn, [_record(r, owners[str(r["owner_id"])])
                                                       for r in batch])
        for result in results:
            if result.inserted:
                new += 1
                cost += result.cost_micros or 0
            else:
                already += 1
        batch.clear()

    for row in _messages(conn, since):
        batch.append(row)
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    return CopiedUsage(new, already, cost)
