"""Money is integer micro-dollars; USD amounts convert exactly or not at all."""

from __future__ import annotations

import reprlib
from decimal import Decimal, InvalidOperation

from ledger.errors import InvalidValue

MICROS_PER_USD = 1_000_000
# Money columns are 64-bit integers.
MAX_MICROS = 2**63 - 1

# Values quoted in errors are cut short: a 2,000-character string makes an unreadable message.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 60
_QUOTE.maxlist = _QUOTE.maxdict = 4


def to_decimal(value: object) -> Decimal:
    """An exact decimal from an int, a decimal string or a Decimal (floats are refused)."""
    if isinstance(value, bool):
        raise InvalidValue(f"not an amount: {_QUOTE.repr(value)}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        # YAML and JSON give floats for "0.3"; repr() is the shortest string that round-trips,
        # so this recovers exactly what the operator wrote.
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidValue(f"not a decimal amount: {_QUOTE.repr(value)}") from None
    else:
        raise InvalidValue(f"not an amount: {_QUOTE.repr(value)}")
    if not result.is_finite():
        raise InvalidValue(f"not a finite amount: {_QUOTE.repr(value)}")
    return result


def usd_to_micros(value: object) -> int:
    """USD to micro-dollars, exactly; an amount finer than one micro-dollar is an error.

    Bounded before converting: `"1e999999"` would overflow, or cost seconds of CPU to expand
    (`copy_abs` applies no decimal context, so it cannot overflow itself).
    """
    amount = to_decimal(value)
    if amount.copy_abs() > MAX_MICROS // MICROS_PER_USD:
        raise InvalidValue("amount is larger than the ledger can hold")
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise InvalidValue(f"{value} USD is not a whole number of micro-dollars")
    return int(micros)


def usd_decimal(micros: int) -> Decimal:
    """Micro-dollars as an exact USD decimal (`300000` -> `0.3`), for prices shown to people."""
    return Decimal(micros) / MICROS_PER_USD


def micros_to_usd(micros: int) -> float:
    """For display and Prometheus only; never feed the result back into arithmetic."""
    return micros / MICROS_PER_USD


def format_usd(micros: int) -> str:
    """`$12.345678` with trailing zeros trimmed to cents."""
    text = f"{Decimal(micros) / MICROS_PER_USD:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"
