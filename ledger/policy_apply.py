"""Making the ledger equal the policy file, and saying what that changed.

Nothing with history is deleted: undeclared users keep their rows but lose their overrides,
undeclared groups lose their limits and members, undeclared models are disabled.

Users and groups synced from Coder (they carry Coder's id) belong to the sync for what Coder
knows: `apply` sets their limits and overrides, never the members of a synced group nor the name
and email of a synced user.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from ledger.limit_store import load_limit_config, save_limit_config
from ledger.limits import LimitConfig, UserOverride
from ledger.money import format_usd, usd_decimal
from ledger.policy_file import (
    UNPRICED,
    DeclaredPrices,
    Policy,
    PolicyGroup,
    PolicyModel,
    PolicyUser,
)
from ledger.price_versions import (
    POLICY,
    add_version,
    drop_future_version,
    price_versions,
    version_at,
)
from ledger.pricing import PriceSheet, price_list
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


def _describe_prices(sheet: PriceSheet | None) -> str:
    """The standard prices below every threshold; `agentmeter prices` shows the rest."""
    if sheet is None or not sheet.base.is_usable:
        return "no pricing"
    extras = [name for name, present in (("tiers", sheet.thresholds),
                                         ("variants", sheet.variants), ("fees", sheet.fees))
              if present]
    return " ".join([*(f"{kind}={usd_decimal(price)}" for kind, price in sheet.base.items()
                       if price is not None), *([f"+{'/'.join(extras)}"] if extras else [])])


def _price_changes(name: str, old: PriceSheet | None, new: PriceSheet | None) -> list[str]:
    """One line per price that changes (USD per 1M tokens, fees per 1,000)."""
    before = dict(price_list(old)) if old is not None else {}
    after = dict(price_list(new)) if new is not None else {}
    return [f"model {name}: price {label} "
            f"{usd_decimal(before[label]) if label in before else '-'} -> "
            f"{usd_decimal(after[label]) if label in after else '-'}"
            for label in [*before, *(k for k in after if k not in before)]
            if before.get(label) != after.get(label)]


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
        sheet = _sheet_at(declared.prices, self.now)
        values: dict[str, Any] = {
            "provider": declared.provider, "enabled": declared.enabled, "declared": True,
            "max_output_tokens": declared.max_output_tokens,
        }
        if row is None:
            model_id = int(self.conn.execute(models.insert().values(
                name=declared.name, created_at=self.now, **values)
            ).inserted_primary_key[0])  # type: ignore[index]
            self.note(f"model {declared.name}: declared ({declared.provider}, "
                      f"{_describe_prices(sheet)}, from {_source(declared.prices)})")
        else:
            model_id = row.id
            old = {k: getattr(row, k) for k in values}
            if old != values:
                self.conn.execute(update(models).where(models.c.id == model_id).values(**values))
                for key in ("provider", "enabled", "declared", "max_output_tokens"):
                    if old[key] != values[key]:
                        self.note(f"model {declared.name}: {key} {old[key]} -> {values[key]}")
        self.prices(declared, model_id, row is None)
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

    def prices(self, declared: PolicyModel, model_id: int, new: bool) -> None:
        """Record the declared prices as new versions where they differ from the ledger's.

        A model's first prices come with their whole dated schedule (a late record of an old
        request finds the price of its day); later changes take effect now, and future dated
        versions the declaration no longer has are withdrawn (they have priced nothing yet).
        """
        wanted = declared.prices
        stored = price_versions(self.conn, [model_id])[model_id]
        if not stored:
            if not new:  # priced for the first time (it was unpriced or only seen in traffic)
                for line in _price_changes(declared.name, None, _sheet_at(wanted, self.now)):
                    self.note(line)
            for at, sheet in wanted.schedule:
                add_version(self.conn, model_id, at or self.now, wanted.source, wanted.detail,
                            sheet, self.now)
            return
        now_version = version_at(stored, self.now)
        assert now_version is not None
        future = [v for v in stored if v.effective_from > self.now]
        wanted_now = _sheet_at(wanted, self.now)
        wanted_future = [(at, sheet) for at, sheet in wanted.schedule
                         if at is not None and at > self.now]
        if (now_version.sheet, now_version.source, now_version.source_detail) != (
                wanted_now, _stored_source(wanted), wanted.detail):
            if now_version.sheet != wanted_now and not new:
                for line in _price_changes(declared.name, now_version.sheet, wanted_now):
                    self.note(line)
            if (now_version.source, now_version.source_detail) != (_stored_source(wanted),
                                                                    wanted.detail):
                self.note(f"model {declared.name}: prices from {_source(wanted)}")
            add_version(self.conn, model_id, self.now, _stored_source(wanted), wanted.detail,
                        wanted_now, self.now)
        kept = [(v.effective_from, v.sheet) for v in future]
        for version in future:
            if (version.effective_from, version.sheet) not in wanted_future:
                drop_future_version(self.conn, version)
                self.note(f"model {declared.name}: prices from "
                          f"{version.effective_from.isoformat()} withdrawn")
        for at, sheet in wanted_future:
            if (at, sheet) not in kept:
                add_version(self.conn, model_id, at, wanted.source, wanted.detail, sheet,
                            self.now)
                self.note(f"model {declared.name}: prices from {at.isoformat()}: "
                          f"{_describe_prices(sheet)}")


def _stored_source(prices: DeclaredPrices) -> str:
    """Unpriced on purpose is a policy decision."""
    return POLICY if prices.source == UNPRICED else prices.source


def _source(prices: DeclaredPrices) -> str:
    if prices.source == UNPRICED:
        return f"{prices.detail} (pricing: none)"
    return prices.detail


def _sheet_at(prices: DeclaredPrices, now: datetime) -> PriceSheet | None:
    chosen = None
    for at, sheet in prices.schedule:
        if chosen is not None and at is not None and at > now:
            break
        chosen = sheet
    return chosen


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
