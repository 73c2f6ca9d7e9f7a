"""Price history: every price version of every model, with the time it took effect.

A price change is a new version, never an edit, so a recorded cost can always be traced to the
prices that made it. A message is priced with the version in effect at its request time (the
latest that took effect at or before it; a request older than every version gets the first).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select

from ledger.engine import from_db
from ledger.periods import as_utc
from ledger.pricing import Fee, PriceSheet, Rates, Variant
from ledger.schema import model_prices
from ledger.tokens import TokenKind

CATALOG = "catalog"
POLICY = "policy"


@dataclass(frozen=True, slots=True)
class PriceVersion:
    id: int
    model_id: int
    effective_from: datetime
    source: str  # CATALOG | POLICY
    source_detail: str  # the catalog's version and name for the model, or the policy file
    sheet: PriceSheet | None  # None: unpriced on purpose from then on
    recorded_at: datetime


def _rates_json(rates: Any) -> dict[str, list[int | None]]:
    return {kind.value: list(values) for kind, values in rates.items()}


def _rates_from(data: dict[str, list[int | None]]) -> dict[TokenKind, Rates]:
    return {TokenKind(kind): tuple(values) for kind, values in data.items()}


def sheet_to_json(sheet: PriceSheet) -> dict[str, Any]:
    return {
        "thresholds": list(sheet.thresholds),
        "rates": _rates_json(sheet.rates),
        "variants": [{"dimension": v.dimension, "value": v.value, "rates": _rates_json(v.rates)}
                     for v in sheet.variants],
        "fees": {fee.value: price for fee, price in sheet.fees.items()},
    }


def sheet_from_json(data: dict[str, Any]) -> PriceSheet:
    return PriceSheet(
        rates=_rates_from(data["rates"]), thresholds=tuple(data.get("thresholds", ())),
        variants=tuple(Variant(dimension=v["dimension"], value=v["value"],
                               rates=_rates_from(v["rates"]))
                       for v in data.get("variants", ())),
        fees={Fee(fee): int(price) for fee, price in data.get("fees", {}).items()})


def version_from_row(row: Any) -> PriceVersion:
    return PriceVersion(id=row.id, model_id=row.model_id,
                        effective_from=from_db(row.effective_from), source=row.source,
                        source_detail=row.source_detail,
                        sheet=None if row.prices is None else sheet_from_json(row.prices),
                        recorded_at=from_db(row.recorded_at))


def price_versions(conn: Connection, model_ids: Iterable[int]) -> dict[int, list[PriceVersion]]:
    """Each model's versions in the order they take effect."""
    wanted = list(set(model_ids))
    found: dict[int, list[PriceVersion]] = {model_id: [] for model_id in wanted}
    if not wanted:
        return found
    stmt = (select(model_prices).where(model_prices.c.model_id.in_(wanted))
            .order_by(model_prices.c.effective_from, model_prices.c.id))
    for row in conn.execute(stmt):
        found[row.model_id].append(version_from_row(row))
    return found


def version_at(versions: list[PriceVersion], at: datetime) -> PriceVersion | None:
    """The version in effect at `at` (the first one for a request older than all)."""
    if not versions:
        return None
    at = as_utc(at)
    chosen = versions[0]
    for version in versions:
        if version.effective_from > at:
            break
        chosen = version
    return chosen


def add_version(conn: Connection, model_id: int, effective_from: datetime, source: str,
                source_detail: str, sheet: PriceSheet | None, now: datetime) -> int:
    result = conn.execute(model_prices.insert().values(
        model_id=model_id, effective_from=effective_from, source=source,
        source_detail=source_detail, prices=None if sheet is None else sheet_to_json(sheet),
        recorded_at=now))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def drop_future_version(conn: Connection, version: PriceVersion) -> None:
    """Withdraw a version that has not taken effect yet (it has priced nothing)."""
    conn.execute(delete(model_prices).where(model_prices.c.id == version.id))
