"""Prices per token kind and the exact cost of one message.

Prices are stored as integer micro-dollars per 1M tokens, so tokens x price / 1M is the cost in
micro-dollars as an exact fraction; the message costs its ceiling (10 tokens at 0.3 USD/1M = 3).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ledger.tokens import TOKEN_KINDS, TokenKind, TokenUsage

TOKENS_PER_PRICE_UNIT = 1_000_000
INPUT_SIDE_KINDS = (TokenKind.INPUT, TokenKind.CACHE_READ, TokenKind.CACHE_WRITE,
                    TokenKind.CACHE_WRITE_1H)


@dataclass(frozen=True, slots=True)
class Pricing:
    """Micro-dollars per 1M tokens for each kind; None where the model has no price for it."""

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

    def max_input_price(self) -> int:
        """The highest input-side price: a safe bound for tokens of unknown kind."""
        return max((self.price(k) or 0) for k in INPUT_SIDE_KINDS)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"price {f.name} must be a non-negative integer: {value!r}")


@dataclass(frozen=True, slots=True)
class PricedUsage:
    # None: the message is unpriced (its model has no pricing).
    cost_micros: int | None
    # Tokens of kinds that had no price: counted, never silently dropped.
    unpriced: TokenUsage


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def price_usage(pricing: Pricing | None, usage: TokenUsage) -> PricedUsage:
    if pricing is None or not pricing.is_usable:
        return PricedUsage(cost_micros=None, unpriced=usage)
    exact = 0  # micro-dollars x 1M
    unpriced: dict[str, int] = {}
    for kind, tokens in usage.items():
        price = pricing.price(kind)
        if price is None:
            if tokens:
                unpriced[kind.value] = tokens
            continue
        exact += tokens * price
    return PricedUsage(cost_micros=ceil_div(exact, TOKENS_PER_PRICE_UNIT),
                       unpriced=TokenUsage(**unpriced))


def cost_upper_bound(pricing: Pricing | None, input_tokens: int, output_tokens: int) -> int:
    """What a request can cost at most: input at the highest input-side price, output at its own."""
    if pricing is None:
        return 0
    exact = input_tokens * pricing.max_input_price() + output_tokens * (pricing.output or 0)
    return ceil_div(exact, TOKENS_PER_PRICE_UNIT)
