"""Making the ledger equal the policy file, and saying what that changed.

Nothing with history is deleted: undeclared users keep their rows but lose their overrides,
undeclared groups lose their limits and members, undeclared models are disabled.

Users and groups synced from Coder (they carry Coder's id) belong to the sync for what Coder
knows: `apply` sets their limits and overrides, never the members of a synced group nor the name
and email of a synced user.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, select, update

from ledger.catalog import PRICE_COLUMNS, pricing_from_row, pricing_values
from ledger.limit_store import load_limit_config, save_limit_config
from ledger.limits import LimitConfig, UserOverride
from ledger.money import format_usd
from ledger.policy_file import Policy, PolicyGroup, PolicyModel, PolicyUser
from ledger.pricing import Pricing
from ledger.schema import (
    group_limits,
    group_members,
    groups,
    limit_config,
    model_aliases,
    models,
    user_limits,
    users,
)
from ledger.users import ensure_user


def _usd(micros: int | None) -> str:
    return "none" if micros is None else format_usd(micros)


def _describe_limits(config: LimitConfig) -> str:
    return (f"enabled={str(config.enabled).lower()} period={config.period} "
            f"default={_usd(config.default_limit_micros)} group_policy={config.group_policy}")


def _describe_override(override: UserOverride | None) -> str:
    if override is None:
        return "none"
    return "unlimited" if override.unlimited else _usd(override.limit_micros)


def _describe_pricing(pricing: Pricing | None) -> str:
    if pricing is None:
        return "no pricing"
    return " ".join(f"{kind}=" + ("-" if price is None else f"{Decimal(price) / 1_000_000}")
                    for kind, price in pricing.items())


class _Applier:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.changes: list[str] = []
        self.now = datetime.now(UTC)

    def note(self, text: str) -> None:
        self.changes.append(text)

    def limits(self, wanted: LimitConfig) -> None:
        current = load_limit_config(self.conn)
        stored = self.conn.execute(select(limit_config.c.id)).first() is not None
        if current != wanted:
            self.note(f"limits: {_describe_limits(current)} -> {_describe_limits(wanted)}")
        if current != wanted or not stored:
            save_limit_config(self.conn, wanted)

    def user(self, declared: PolicyUser) -> int:
        user = ensure_user(self.conn, declared.username)
        synced = self.conn.execute(select(users.c.coder_id)
                                   .where(users.c.id == user.id)).scalar() is not None
        if not synced and (user.name, user.email) != (declared.name, declared.email):
            self.conn.execute(update(users).where(users.c.id == user.id)
                              .values(name=declared.name, email=declared.email))
            self.note(f"user {user.username}: name/email {user.name!r} <{user.email}> -> "
                      f"{declared.name!r} <{declared.email}>")
        return user.id

    def overrides(self, declared: dict[int, tuple[str, UserOverride | None]]) -> None:
        current = {row.user_id: (row.username, UserOverride(row.limit_micros,
                                                            row.limit_micros is None))
                   for row in self.conn.execute(
                       select(user_limits, users.c.username)
                       .join(users, users.c.id == user_limits.c.user_id))}
        for user_id, (username, stored) in sorted(current.items(), key=lambda kv: kv[1][0]):
            if declared.get(user_id, (username, None))[1] is None:
                self.conn.execute(delete(user_limits).where(user_limits.c.user_id == user_id))
                self.note(f"user {username}: limit {_describe_override(stored)} -> none")
        for user_id, (username, new) in declared.items():
            before = current.get(user_id)
            old = before[1] if before else None
            if new is None or old == new:
                continue
            values = {"limit_micros": None if new.unlimited else new.limit_micros}
            if old is None:
                self.conn.execute(user_limits.insert().values(user_id=user_id, **values))
            else:
                self.conn.execute(update(user_limits).where(user_limits.c.user_id == user_id)
                                  .values(**values))
            self.note(f"user {username}: limit {_describe_override(old)} -> "
                      f"{_describe_override(new)}")

    def group(self, declared: PolicyGroup | None, name: str, group_id: int | None,
              synced: bool = False) -> None:
        if group_id is None:
            group_id = int(self.conn.execute(groups.insert().values(
                name=name, created_at=self.now)).inserted_primary_key[0])  # type: ignore[index]
            self.note(f"group {name}: created")
        old_limit = self.conn.execute(select(group_limits.c.limit_micros)
                                      .where(group_limits.c.group_id == group_id)).scalar()
        new_limit = declared.limit_micros if declared else None
        if old_limit != new_limit:
            self.conn.execute(delete(group_limits).where(group_limits.c.group_id == group_id))
            if new_limit is not None:
                self.conn.execute(group_limits.insert().values(group_id=group_id,
                                                               limit_micros=new_limit))
            self.note(f"group {name}: limit {_usd(old_limit)} -> {_usd(new_limit)}")
        if synced:
            return  # its members come from Coder
        old_members = {row.username: row.id for row in self.conn.execute(
            select(users.c.username, users.c.id)
            .join(group_members, group_members.c.user_id == users.c.id)
            .where(group_members.c.group_id == group_id))}
        new_members = set(declared.members) if declared else set()
        for username in sorted(set(old_members) - new_members):
            self.conn.execute(delete(group_members).where(
                group_members.c.group_id == group_id,
                group_members.c.user_id == old_members[username]))
            self.note(f"group {name}: member {username} removed")
        for username in sorted(new_members - set(old_members)):
            user = ensure_user(self.conn, username)
            self.conn.execute(group_members.insert().values(group_id=group_id, user_id=user.id))
            self.note(f"group {name}: member {username} added")

    def model(self, declared: PolicyModel, row: Any | None) -> None:
        values: dict[str, Any] = {
            "provider": declared.provider, "enabled": declared.enabled, "declared": True,
            "max_output_tokens": declared.max_output_tokens,
            **pricing_values(declared.pricing),
        }
        if row is None:
            model_id = int(self.conn.execute(models.insert().values(
                name=declared.name, created_at=self.now, **values)
            ).inserted_primary_key[0])  # type: ignore[index]
            self.note(f"model {declared.name}: declared ({declared.provider}, "
                      f"{_describe_pricing(declared.pricing)})")
        else:
            model_id = row.id
            old = {k: getattr(row, k) for k in values}
            if old != values:
                self.conn.execute(update(models).where(models.c.id == model_id).values(**values))
                for key in ("provider", "enabled", "declared", "max_output_tokens"):
                    if old[key] != values[key]:
                        self.note(f"model {declared.name}: {key} {old[key]} -> {values[key]}")
                if any(old[c] != values[c] for c in ("has_pricing", *PRICE_COLUMNS.values())):
                    self.note(f"model {declared.name}: pricing "
                              f"{_describe_pricing(pricing_from_row(row))} -> "
                              f"{_describe_pricing(declared.pricing)}")
        current = {r.alias: r.model_id for r in self.conn.execute(
            select(model_aliases).where(model_aliases.c.alias.in_(declared.aliases)
                                        | (model_aliases.c.model_id == model_id)))}
        for alias, owner in sorted(current.items()):
            if owner == model_id and alias not in declared.aliases:
                self.conn.execute(delete(model_aliases).where(model_aliases.c.alias == alias))
                self.note(f"model {declared.name}: alias {alias} removed")
        for alias in declared.aliases:
            if current.get(alias) == model_id:
                continue
            self.conn.execute(delete(model_aliases).where(model_aliases.c.alias == alias))
            self.conn.execute(model_aliases.insert().values(alias=alias, model_id=model_id))
            self.note(f"model {declared.name}: alias {alias} added")


def apply_policy(conn: Connection, policy: Policy) -> list[str]:
    """Make the ledger equal the policy; returns one line per change (empty: nothing changed).

    Run it in a transaction: a dry run rolls the transaction back after reading the changes.
    """
    a = _Applier(conn)
    a.limits(policy.limits)

    declared_overrides: dict[int, tuple[str, UserOverride | None]] = {}
    for user in policy.users:
        declared_overrides[a.user(user)] = (user.username, user.override)
    a.overrides(declared_overrides)

    existing_groups = {row.name: row for row in conn.execute(
        select(groups.c.name, groups.c.id, groups.c.coder_id))}
    declared_groups = {g.name: g for g in policy.groups}
    for name in sorted(set(existing_groups) | set(declared_groups)):
        row = existing_groups.get(name)
        a.group(declared_groups.get(name), name, None if row is None else row.id,
                synced=row is not None and row.coder_id is not None)

    existing_models = {row.name: row for row in conn.execute(select(models))}
    names = {m.name for m in policy.models}
    for model in policy.models:
        a.model(model, existing_models.get(model.name))
    for name, row in sorted(existing_models.items()):
        if name not in names and row.declared:
            conn.execute(update(models).where(models.c.id == row.id)
                         .values(enabled=False, declared=False))
            a.note(f"model {name}: no longer declared, disabled")
    return a.changes
