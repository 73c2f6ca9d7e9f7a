"""A model's prices and the exact cost of one message.

Token prices are integer micro-dollars per 1M tokens, so tokens x price / 1M is the cost in
micro-dollars as an exact fraction; fees are integer micro-dollars per 1,000 requests. A
message costs the ceiling of the exact sum, taken once (10 tokens at 0.3 USD/1M = 3 micros).

What a model's prices (`PriceSheet`) say, as the providers bill:

- **Tiers.** Thresholds on the request's *total input*: input + cache reads + cache writes of
  both lengths (Anthropic reports those apart; OpenAI's and Gemini's prompt counts already hold
  them). A request whose total input is strictly above a threshold is priced whole, output
  included, at that tier's prices.
- **Variants.** Prices for a service tier (`flex`, `priority`, ...), batch processing or a speed
  (`fast`), chosen from what the answer reports. A kind the variant does not price keeps the
  standard price; when several variants apply, the first that prices a kind wins.
- **Fees.** Per request (web searches), priced per 1,000.

A variant the model has no price for, or a tier that leaves out a kind the model prices, is
priced at the model's highest price for those tokens (a client must not buy a discount by
asking for something nobody priced), and the message reports it as a pricing `Gap`. A fee
without a price leaves those requests unpriced, also as a gap. Never silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ledger.errors import LedgerError
from ledger.tokens import TOKEN_KINDS, TokenKind, TokenUsage

TOKENS_PER_PRICE_UNIT = 1_000_000
REQUESTS_PER_FEE_UNIT = 1_000
INPUT_SIDE_KINDS = (TokenKind.INPUT, TokenKind.CACHE_READ, TokenKind.CACHE_WRITE,
                    TokenKind.CACHE_WRITE_1H)

# Variant dimensions, as the answer reports them.
SERVICE_TIER = "service_tier"
PROCESSING = "processing"
SPEED = "speed"
BATCH = "batch"
# What answers report for the standard prices: OpenAI's `default`, Anthropic's `standard`
# (service tier and speed alike).
STANDARD_SERVICE_TIERS = frozenset({"default", "standard"})
STANDARD_SPEEDS = frozenset({"standard"})
# Asked of the provider, not reported by it: any tier may answer, so the dearest one counts.
AUTO_SERVICE_TIER = "auto"


class Fee(StrEnum):
    WEB_SEARCH = "web_search"


FEES: tuple[Fee, ...] = tuple(Fee)


class Gap(StrEnum):
    """Why a message's cost is a bound rather than a bill (see the module docstring)."""

    VARIANT = "variant"
    TIER = "tier"
    FEE = "fee"


GAPS: tuple[Gap, ...] = tuple(Gap)

# One price per tier (index 0: at or below the first threshold); None: the tier has no price.
Rates = tuple[int | None, ...]


class UnboundedWebSearches(LedgerError):
    """Strict enforcement cannot bound a request that allows any number of web searches."""

    def __init__(self) -> None:
        super().__init__("the request allows unbounded web searches, which strict enforcement "
                         "cannot bound: set a bound (the web search tool's max_uses, where the "
                         "provider has one) or send the request without its search tool")


def _check_price(name: str, value: int | None) -> None:
    if value is not None and (type(value) is not int or value < 0):
        raise ValueError(f"price {name} must be a non-negative integer: {value!r}")


@dataclass(frozen=True, slots=True)
class Pricing:
    """Flat micro-dollars per 1M tokens for each kind; None where the model has no price."""

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    cache_write_1h: int | None = None

    def price(self, kind: TokenKind) -> int | None:
        value: int | None = getattr(self, kind.value)
        return value

    def items(self) -> list[tuple[TokenKind, int | None]]:
        return [(kind, self.price(kind)) for kind in TOKEN_KINDS]

    @property
    def is_usable(self) -> bool:
        """A model counts as priced when it has at least an input or an output price."""
        return self.input is not None or self.output is not None

    def missing_kinds(self) -> list[TokenKind]:
        return [kind for kind, price in self.items() if price is None]

    def __post_init__(self) -> None:
        for kind in TOKEN_KINDS:
            _check_price(kind.value, self.price(kind))


@dataclass(frozen=True, slots=True)
class Variant:
    """Prices that replace the standard ones when the answer reports `dimension: value`."""

    dimension: str  # SERVICE_TIER | PROCESSING | SPEED
    value: str
    rates: Mapping[TokenKind, Rates]

    @property
    def label(self) -> str:
        return BATCH if (self.dimension, self.value) == (PROCESSING, BATCH) else (
            f"{self.dimension}={self.value}")


@dataclass(frozen=True, slots=True)
class PriceSheet:
    """Everything one price version of a model says (see the module docstring)."""

    # Kinds the model prices, one price per tier; a kind absent here has no price at all.
    rates: Mapping[TokenKind, Rates]
    # Total-input thresholds, ascending; tier i applies above thresholds[i - 1].
    thresholds: tuple[int, ...] = ()
    variants: tuple[Variant, ...] = ()
    fees: Mapping[Fee, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(b <= a for a, b in zip(self.thresholds, self.thresholds[1:], strict=False)):
            raise ValueError("tier thresholds must be strictly ascending")
        if any(t <= 0 for t in self.thresholds):
            raise ValueError("tier thresholds must be positive token counts")
        width = len(self.thresholds) + 1
        for owner in (self.rates, *(v.rates for v in self.variants)):
            for kind, rates in owner.items():
                if len(rates) != width:
                    raise ValueError(f"{kind.value} needs {width} prices, one per tier")
                for rate in rates:
                    _check_price(kind.value, rate)
        for fee, price in self.fees.items():
            _check_price(fee.value, price)

    @classmethod
    def flat(cls, pricing: Pricing) -> PriceSheet:
        """One price per kind, no tiers, variants or fees (the policy file's short form)."""
        return cls(rates={kind: (price,) for kind, price in pricing.items() if price is not None})

    @property
    def base(self) -> Pricing:
        """The standard prices below every threshold."""
        return Pricing(**{kind.value: rates[0] for kind, rates in self.rates.items()})

    def tier_index(self, total_input: int) -> int:
        return sum(1 for start in self.thresholds if total_input > start)

    def highest(self, kind: TokenKind) -> int | None:
        """The dearest price the model has for `kind`, in any tier or variant."""
        found = [rate for owner in (self.rates, *(v.rates for v in self.variants))
                 for rate in owner.get(kind, ()) if rate is not None]
        return max(found) if found else None

    def variant(self, dimension: str, value: str) -> Variant | None:
        return next((v for v in self.variants
                     if (v.dimension, v.value) == (dimension, value)), None)


def price_list(sheet: PriceSheet) -> list[tuple[str, int]]:
    """Every price of `sheet`, labelled as an operator reads it: `input`, `output above
    200000`, `service_tier=flex input`, `batch output`, `web_search per 1k`. A tier's price
    equal to the one below it is not repeated."""
    found: list[tuple[str, int]] = []

    def add(prefix: str, rates: Mapping[TokenKind, Rates]) -> None:
        for kind in TOKEN_KINDS:
            values = rates.get(kind, ())
            for i, value in enumerate(values):
                if value is None or (i and value == values[i - 1]):
                    continue
                above = f" above {sheet.thresholds[i - 1]}" if i else ""
                found.append((f"{prefix}{kind.value}{above}", value))

    add("", sheet.rates)
    for variant in sheet.variants:
        add(f"{variant.label} ", variant.rates)
    found += [(f"{fee.value} per 1k", price) for fee, price in sheet.fees.items()]
    return found


@dataclass(frozen=True, slots=True)
class Billing:
    """What the answer reported beyond tokens: the variant it was served at and its fees."""

    service_tier: str | None = None
    batch: bool = False
    speed: str | None = None
    web_searches: int = 0

    def context(self) -> list[tuple[str, str]]:
        """The variant dimensions that select prices (standard tiers select none)."""
        pairs: list[tuple[str, str]] = []
        # Anthropic reports a batch request as `service_tier: batch`: batch processing.
        batch = self.batch or self.service_tier == BATCH
        tier = self.service_tier
        if tier is not None and tier != BATCH and tier not in STANDARD_SERVICE_TIERS:
            pairs.append((SERVICE_TIER, tier))
        if batch:
            pairs.append((PROCESSING, BATCH))
        if self.speed is not None and self.speed not in STANDARD_SPEEDS:
            pairs.append((SPEED, self.speed))
        return pairs


STANDARD = Billing()


@dataclass(frozen=True, slots=True)
class PricedUsage:
    # None: the message is unpriced (its model has no pricing).
    cost_micros: int | None
    # Tokens of kinds that had no price: counted, never silently dropped.
    unpriced: TokenUsage
    # The threshold the request's total input passed (0: below every threshold).
    tier_start: int = 0
    gaps: frozenset[Gap] = frozenset()
    # Fee requests (web searches) the model has no price for.
    unpriced_web_searches: int = 0


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def total_input(usage: TokenUsage) -> int:
    """The tokens a tier threshold is compared with: every input-side kind."""
    return sum(usage.get(kind) for kind in INPUT_SIDE_KINDS)


def _dearest(rates: Iterable[Rates], tier: int) -> int | None:
    found = [rate for r in rates if (rate := r[tier]) is not None]
    return max(found) if found else None


def _resolved(sheet: PriceSheet, kind: TokenKind, pairs: list[tuple[str, str]],
              standard: Rates) -> Rates:
    """The first reported variant that prices `kind`, in the sheet's order; else standard."""
    for variant in sheet.variants:
        if (variant.dimension, variant.value) in pairs and kind in variant.rates:
            return variant.rates[kind]
    return standard


def _rate(sheet: PriceSheet, kind: TokenKind, tier: int, pairs: list[tuple[str, str]],
          gaps: set[Gap]) -> int | None:
    """The price of `kind` at `tier` under the reported variants, noting any gap."""
    standard = sheet.rates.get(kind)
    if standard is None:
        return None
    auto = (SERVICE_TIER, AUTO_SERVICE_TIER) in pairs
    known = [pair for pair in pairs if pair != (SERVICE_TIER, AUTO_SERVICE_TIER)]
    if any(sheet.variant(*pair) is None for pair in known):
        gaps.add(Gap.VARIANT)
        return sheet.highest(kind)
    candidates = [_resolved(sheet, kind, known, standard)]
    if auto:
        candidates += [v.rates[kind] for v in sheet.variants
                       if v.dimension == SERVICE_TIER and kind in v.rates]
    if any(rates[tier] is None for rates in candidates):
        gaps.add(Gap.TIER)
        return sheet.highest(kind)
    return _dearest(candidates, tier)


def price_message(sheet: PriceSheet | None, usage: TokenUsage,
                  billing: Billing = STANDARD) -> PricedUsage:
    """The exact cost of one message under `sheet` (None: unpriced, cost None)."""
    if sheet is None or not sheet.base.is_usable:
        return PricedUsage(cost_micros=None, unpriced=usage,
                           unpriced_web_searches=billing.web_searches)
    tier = sheet.tier_index(total_input(usage))
    pairs = billing.context()
    gaps: set[Gap] = set()
    exact = 0  # micro-dollars x 1M
    unpriced: dict[str, int] = {}
    for kind, tokens in usage.items():
        if not tokens:
            continue
        price = _rate(sheet, kind, tier, pairs, gaps)
        if price is None:
            unpriced[kind.value] = tokens
            continue
        exact += tokens * price
    unpriced_searches = 0
    if billing.web_searches:
        fee = sheet.fees.get(Fee.WEB_SEARCH)
        if fee is None:
            gaps.add(Gap.FEE)
            unpriced_searches = billing.web_searches
        else:
            exact += billing.web_searches * fee * (TOKENS_PER_PRICE_UNIT // REQUESTS_PER_FEE_UNIT)
    return PricedUsage(cost_micros=ceil_div(exact, TOKENS_PER_PRICE_UNIT),
                       unpriced=TokenUsage(**unpriced),
                       tier_start=sheet.thresholds[tier - 1] if tier else 0,
                       gaps=frozenset(gaps), unpriced_web_searches=unpriced_searches)


def cost_upper_bound(sheet: PriceSheet | None, input_tokens: int,
                     output_tokens: int, *, service_tier: str | None = None,
                     batch: bool = False, speed: str | None = None,
                     web_searches: int | None = 0) -> int:
    """The most a request can cost, for strict enforcement (which reserves it beforehand).

    `input_tokens` bounds the request's total input, so every tier up to the one it reaches
    counts; each input-side token is priced at the dearest input-side price of those tiers.
    `service_tier` is the tier the request asked for: None or `auto` counts as the dearest
    the model has. `web_searches` is the most searches the request allows (Anthropic's
    `max_uses`, one for a request billed once per answer; 0: no search tool); None, a search
    tool without a bound, raises `UnboundedWebSearches`.
    """
    if web_searches is None:
        raise UnboundedWebSearches()
    if sheet is None:
        return 0
    asked = AUTO_SERVICE_TIER if service_tier is None else service_tier
    billing = Billing(service_tier=asked, batch=batch, speed=speed)
    pairs = billing.context()
    reachable = range(sheet.tier_index(input_tokens) + 1)
    ignored: set[Gap] = set()

    def dearest(kinds: Iterable[TokenKind]) -> int:
        return max((_rate(sheet, kind, tier, pairs, ignored) or 0
                    for kind in kinds for tier in reachable), default=0)

    exact = (input_tokens * dearest(INPUT_SIDE_KINDS)
             + output_tokens * dearest((TokenKind.OUTPUT,))
             + web_searches * sheet.fees.get(Fee.WEB_SEARCH, 0)
             * (TOKENS_PER_PRICE_UNIT // REQUESTS_PER_FEE_UNIT))
    return ceil_div(exact, TOKENS_PER_PRICE_UNIT)
