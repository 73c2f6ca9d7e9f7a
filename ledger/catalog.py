"""Models, their aliases and prices, and the gaps in pricing that under-report spend.

A model's prices are those of its price version in effect at the time asked about
(`ledger.price_versions.version_at`, the one home of that rule): a version dated in the future
shows here once its time has come, without another `apply`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, func, or_, select, update

from ledger.dialect import upsert
from ledger.price_versions import PriceVersion, price_versions, version_at
from ledger.pricing import GAPS, Gap, PriceSheet, Pricing
from ledger.schema import daily_usage, model_aliases, models, usage_totals
from ledger.tokens import TOKEN_KINDS, TokenKind


@dataclass(frozen=True, slots=True)
class Model:
    id: int
    name: str
    provider: str
    enabled: bool
    declared: bool
    max_output_tokens: int | None
    aliases: tuple[str, ...] = ()
    # Everything the price version in effect when the model was read says (tiers, variants,
    # fees): what strict enforcement bounds a request with (ledger.pricing.cost_upper_bound);
    # None: the model is unpriced.
    prices: PriceSheet | None = None

    @property
    def pricing(self) -> Pricing | None:
        """The standard prices, below every tier threshold; None: the model is unpriced."""
        return None if self.prices is None else self.prices.base


@dataclass(frozen=True, slots=True)
class ModelPricingGap:
    model: str
    # Kinds without a price (all of them when the model has no pricing).
    missing_kinds: tuple[TokenKind, ...]
    reason: str  # "no_pricing" | "no_input_or_output_price" | "undeclared"


def _current_versions(conn: Connection, model_ids: list[int],
                      now: datetime | None) -> dict[int, PriceVersion | None]:
    """Each model's price version in effect at `now` (the present when None)."""
    at = datetime.now(UTC) if now is None else now
    return {model_id: version_at(found, at)
            for model_id, found in price_versions(conn, model_ids).items()}


def _standard(version: PriceVersion | None) -> Pricing | None:
    """The standard prices below every tier of a version; None: unpriced (never priced, or
    unpriced on purpose from then on)."""
    return None if version is None or version.sheet is None else version.sheet.base


def _aliases(conn: Connection, model_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    if not model_ids:
        return found
    stmt = (select(model_aliases.c.model_id, model_aliases.c.alias)
            .where(model_aliases.c.model_id.in_(model_ids)).order_by(model_aliases.c.alias))
    for row in conn.execute(stmt):
        found.setdefault(row.model_id, []).append(row.alias)
    return found


def _models(conn: Connection, rows: list[Any], now: datetime | None = None) -> list[Model]:
    ids = [row.id for row in rows]
    aliases = _aliases(conn, ids)
    current = _current_versions(conn, ids, now)
    return [Model(id=row.id, name=row.name, provider=row.provider, enabled=bool(row.enabled),
                  declared=bool(row.declared), max_output_tokens=row.max_output_tokens,
                  aliases=tuple(aliases.get(row.id, ())),
                  prices=None if (v := current.get(row.id)) is None else v.sheet)
            for row in rows]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=_Named)


# When a string is one model's name and another's alias, the name wins: the one rule for every
# lookup of a requested model (`prefer_name` for rows found by either, `name_and_alias_index`
# for a catalog kept in memory).


def prefer_name(rows: Iterable[R], name_or_alias: str) -> R | None:
    """Of the rows found by name or alias (each with a `name`), the one named so, else any."""
    return min(rows, key=lambda row: row.name != name_or_alias, default=None)


def name_and_alias_index(found: Iterable[Model]) -> dict[str, Model]:
    """Every model under its name and each of its aliases, a name winning over an alias."""
    found = list(found)
    index = {alias: model for model in reversed(found) for alias in model.aliases}
    index.update((model.name, model) for model in found)
    return index


def find_model(conn: Connection, name_or_alias: str) -> Model | None:
    """The model named so or aliased so, enabled or not."""
    alias_of = select(model_aliases.c.model_id).where(model_aliases.c.alias == name_or_alias)
    stmt = select(models).where(or_(models.c.name == name_or_alias, models.c.id.in_(alias_of)))
    row = prefer_name(conn.execute(stmt), name_or_alias)
    return None if row is None else _models(conn, [row])[0]


def all_models(conn: Connection, now: datetime | None = None) -> list[Model]:
    """Every model with the prices in effect at `now` (the present when None)."""
    return _models(conn, list(conn.execute(select(models).order_by(models.c.name))), now)


def enabled_models(conn: Connection, now: datetime | None = None) -> list[Model]:
    """The enabled models with the prices in effect at `now` (the present when None)."""
    stmt = select(models).where(models.c.enabled.is_(True)).order_by(models.c.name)
    return _models(conn, list(conn.execute(stmt)), now)


def ensure_traffic_model(conn: Connection, name: str, provider: str) -> int:
    """Id of the model used by traffic, creating an undeclared, disabled row on first sight."""
    found = find_model(conn, name)
    if found is not None:
        if not found.declared:
            conn.execute(update(models).where(models.c.id == found.id)
                         .values(seen_in_traffic=True))
        return found.id
    stmt = upsert(conn, models).values(
        name=name, provider=provider, enabled=False, declared=False, seen_in_traffic=True,
        created_at=datetime.now(UTC))
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
    model_id = conn.execute(select(models.c.id).where(models.c.name == name)).scalar_one()
    return int(model_id)


def _listed_pricing(conn: Connection, now: datetime | None) -> list[tuple[Any, Pricing | None]]:
    """Every enabled or traffic-seen model's row and its standard prices at `now`."""
    stmt = select(models).where(or_(models.c.enabled.is_(True),
                                    models.c.seen_in_traffic.is_(True))).order_by(models.c.name)
    rows = list(conn.execute(stmt))
    current = _current_versions(conn, [row.id for row in rows], now)
    return [(row, _standard(current.get(row.id))) for row in rows]


def models_without_pricing(conn: Connection, now: datetime | None = None
                           ) -> list[ModelPricingGap]:
    """Enabled models with no usable pricing at `now` (the present when None), plus undeclared
    models seen in traffic.

    A priced model that lacks a price for some kind is not listed here (it is still priced);
    `pricing_gaps` lists those kinds for the per-kind metric.
    """
    gaps = []
    for row, pricing in _listed_pricing(conn, now):
        if not row.declared and row.seen_in_traffic:
            reason = "undeclared"
        elif not row.enabled:
            continue
        elif pricing is None:
            reason = "no_pricing"
        elif not pricing.is_usable:
            reason = "no_input_or_output_price"
        else:
            continue
        missing = TOKEN_KINDS if pricing is None else tuple(pricing.missing_kinds())
        gaps.append(ModelPricingGap(model=row.name, missing_kinds=tuple(missing), reason=reason))
    return gaps


def pricing_gaps(conn: Connection, now: datetime | None = None) -> list[ModelPricingGap]:
    """Every enabled or traffic-seen model with at least one kind unpriced at `now` (the
    present when None), and which kinds."""
    gaps = []
    for row, pricing in _listed_pricing(conn, now):
        missing = TOKEN_KINDS if pricing is None else tuple(pricing.missing_kinds())
        if missing:
            reason = ("undeclared" if not row.declared else
                      "no_pricing" if pricing is None else "partial_pricing")
            gaps.append(ModelPricingGap(model=row.name, missing_kinds=tuple(missing),
                                        reason=reason))
    return gaps


@dataclass(frozen=True, slots=True)
class UnpricedUsage:
    model: str
    messages: int  # recorded without a cost (the model had no pricing)
    tokens: dict[TokenKind, int]
    # Messages priced with a gap (a variant, tier or fee without a price), per kind of gap.
    gap_messages: dict[Gap, int]


def _gap_column(gap: Gap) -> str:
    return f"{gap.value}_gap_messages"


def unpriced_usage_by_model(conn: Connection) -> list[UnpricedUsage]:
    """Unpriced messages and tokens per model over all time, from the lifetime totals."""
    columns = [func.coalesce(func.sum(getattr(usage_totals.c, f"unpriced_{k.value}_tokens")), 0)
               .label(k.value) for k in TOKEN_KINDS]
    gaps = [func.coalesce(func.sum(usage_totals.c[_gap_column(gap)]), 0).label(gap.value)
            for gap in GAPS]
    stmt = (select(models.c.name,
                   func.coalesce(func.sum(usage_totals.c.unpriced_messages), 0).label("messages"),
                   *columns, *gaps)
            .select_from(models.outerjoin(usage_totals, usage_totals.c.model_id == models.c.id))
            .where(or_(models.c.enabled.is_(True), models.c.seen_in_traffic.is_(True)))
            .group_by(models.c.name).order_by(models.c.name))
    return [UnpricedUsage(model=row.name, messages=int(row.messages),
                          tokens={k: int(getattr(row, k.value)) for k in TOKEN_KINDS},
                          gap_messages={gap: int(getattr(row, gap.value)) for gap in GAPS})
            for row in conn.execute(stmt)]


def recent_traffic_gaps(conn: Connection, since: date) -> list[tuple[str, Gap]]:
    """Models whose messages since `since` (a UTC day) were priced with a gap, and which gaps:
    a service tier, tier or fee that has no price is only known from the answers."""
    sums = [func.sum(daily_usage.c[_gap_column(gap)]).label(gap.value) for gap in GAPS]
    stmt = (select(models.c.name, *sums)
            .join(models, models.c.id == daily_usage.c.model_id)
            .where(daily_usage.c.day >= since).group_by(models.c.name).order_by(models.c.name))
    return [(row.name, gap) for row in conn.execute(stmt) for gap in GAPS
            if getattr(row, gap.value)]
