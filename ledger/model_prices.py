"""A model's prices as an operator asks about them: in effect now, and any already scheduled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from ledger.catalog import Model, find_model
from ledger.errors import ModelNotFound
from ledger.price_versions import PriceVersion, price_versions, version_at


@dataclass(frozen=True, slots=True)
class ModelPrices:
    model: Model
    current: PriceVersion | None  # None: the model never had prices
    upcoming: tuple[PriceVersion, ...]  # dated versions that take effect later


def model_prices(conn: Connection, name_or_alias: str, now: datetime) -> ModelPrices:
    model = find_model(conn, name_or_alias)
    if model is None:
        raise ModelNotFound(name_or_alias)
    versions = price_versions(conn, [model.id])[model.id]
    return ModelPrices(model=model, current=version_at(versions, now),
                       upcoming=tuple(v for v in versions if v.effective_from > now))
