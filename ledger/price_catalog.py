"""Prices from the `genai-prices` catalog installed with agentmeter, as `PriceSheet`s.

The catalog is read from the installed package only (its bundled snapshot, never its
auto-updater): upgrading the package and running `apply` is how catalog prices move.

The catalog's own rules, which the sheets reproduce exactly: its `input_tokens` is the total
input (cache reads and writes included) and `cache_write_tokens` all cache writes, of which
`cache_write_1h_tokens` is the one-hour part; a token of a kind without its own price is priced
as the kind it belongs to (a cache read without a cache-read price as input, a one-hour write
without its price as a cache write). Prices carry start dates, so a model has one sheet per
date its prices or variants changed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from importlib.metadata import version

from genai_prices import types
from genai_prices.data_snapshot import DataSnapshot

from ledger.pricing import Fee, PriceSheet, Rates, Variant
from ledger.tokens import TokenKind

PACKAGE = "genai-prices"
# Where each token kind's price is found, most specific first: the catalog prices a kind
# without a price of its own as the kind that contains it.
PRICE_KEYS: dict[TokenKind, tuple[str, ...]] = {
    TokenKind.INPUT: ("input_mtok",),
    TokenKind.OUTPUT: ("output_mtok",),
    TokenKind.CACHE_READ: ("cache_read_mtok", "input_mtok"),
    TokenKind.CACHE_WRITE: ("cache_write_5m_mtok", "cache_write_mtok", "input_mtok"),
    TokenKind.CACHE_WRITE_1H: ("cache_write_1h_mtok", "cache_write_mtok", "input_mtok"),
}
FEE_KEYS: dict[Fee, str] = {Fee.WEB_SEARCH: "web_searches_kcount"}
# Before any dated price: the catalog's first prices apply.
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
Price = Decimal | types.TieredPrices


def catalog_version() -> str:
    """`genai-prices X.Y.Z`: the source named beside every catalog price."""
    return f"{PACKAGE} {version(PACKAGE)}"


@functools.cache
def _snapshot() -> DataSnapshot:
    from genai_prices.data import providers

    return DataSnapshot(providers=providers, from_auto_update=False)


@dataclass(frozen=True, slots=True)
class CatalogModel:
    provider: str
    id: str  # the catalog's own name for the model
    # (effective from, prices), in date order; the first from BEGINNING.
    schedule: tuple[tuple[datetime, PriceSheet], ...]


def find_catalog_model(provider: str, name: str) -> CatalogModel | None:
    """The catalog's prices for `name` (its id or any name it matches) at `provider`."""
    try:
        found_provider, model = _snapshot().find_provider_model(name, None, provider, None)
    except LookupError:
        return None
    if found_provider.id != provider:
        return None
    return CatalogModel(provider=provider, id=model.id, schedule=_schedule(model))


def _dates(model: types.ModelInfo) -> list[datetime]:
    found: set[date] = set()
    constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    constraints += [v.constraint for v in model.price_variants or ()]
    for constraint in constraints:
        if isinstance(constraint, types.StartDateConstraint):
            found.add(constraint.start_date)
    return [datetime.combine(day, time(), UTC) for day in sorted(found)]


def _schedule(model: types.ModelInfo) -> tuple[tuple[datetime, PriceSheet], ...]:
    versions: list[tuple[datetime, PriceSheet]] = []
    for start in [BEGINNING, *_dates(model)]:
        sheet = _sheet(model, start)
        if not versions or versions[-1][1] != sheet:
            versions.append((start, sheet))
    return tuple(versions)


def _value(prices: types.ModelPrice, key: str) -> Price | None:
    value = getattr(prices, key, None)
    return value if isinstance(value, Decimal | types.TieredPrices) else None


def _key_for(kind: TokenKind, prices: types.ModelPrice) -> str | None:
    return next((key for key in PRICE_KEYS[kind] if _value(prices, key) is not None), None)


def _thresholds(prices: list[types.ModelPrice]) -> tuple[int, ...]:
    starts = {tier.start for p in prices for kind in PRICE_KEYS for key in PRICE_KEYS[kind]
              if isinstance(value := _value(p, key), types.TieredPrices) for tier in value.tiers}
    return tuple(sorted(start for start in starts if start > 0))


def _micros(usd: Decimal) -> int:
    micros = usd * 1_000_000
    if micros != micros.to_integral_value():
        raise ValueError(f"catalog price {usd} is finer than a micro-dollar")
    return int(micros)


def _rates(value: Price, thresholds: tuple[int, ...]) -> Rates:
    """The price in each of the sheet's tiers, as the catalog would apply it."""
    if isinstance(value, Decimal):
        return (_micros(value),) * (len(thresholds) + 1)
    rates = []
    for total in (0, *(start + 1 for start in thresholds)):
        price = value.base
        for tier in reversed(value.tiers):
            if total > tier.start:
                price = tier.price
                break
        rates.append(_micros(price))
    return tuple(rates)


def _sheet(model: types.ModelInfo, at: datetime) -> PriceSheet:
    standard = model.get_prices(at)
    active = [v for v in model.price_variants or ()
              if len(v.when) == 1 and (v.constraint is None or v.constraint.active(at))]
    resolved = [model.get_prices(at, v.when) for v in active]
    thresholds = _thresholds([standard, *resolved])
    rates: dict[TokenKind, Rates] = {}
    for kind in PRICE_KEYS:
        key = _key_for(kind, standard)
        if key is not None:
            rates[kind] = _rates(_value(standard, key), thresholds)  # type: ignore[arg-type]
    variants = []
    for variant, prices in zip(active, resolved, strict=True):
        (dimension, value), = variant.when.items()
        own: dict[TokenKind, Rates] = {}
        for kind in PRICE_KEYS:
            key = _key_for(kind, prices)
            # Only kinds whose price the variant itself sets: the rest keep the standard price.
            if key is not None and _value(variant.prices, key) is not None:
                own[kind] = _rates(_value(prices, key), thresholds)  # type: ignore[arg-type]
        variants.append(Variant(dimension=dimension, value=value, rates=own))
    fees = {fee: _micros(price) for fee, key in FEE_KEYS.items()
            if isinstance(price := _value(standard, key), Decimal)}
    return PriceSheet(rates=rates, thresholds=thresholds, variants=tuple(variants), fees=fees)
