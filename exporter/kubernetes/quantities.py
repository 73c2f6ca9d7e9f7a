"""Kubernetes resource quantities ("100m", "2Gi", "1e3", "12345n") as exact numbers.

The API server writes CPU in cores or millicores and memory in bytes with decimal or binary
suffixes; metrics-server writes CPU in nanocores ("12345n") and memory in kibibytes ("100Ki").
Parsing is exact (Decimal) so that summing the requests of thousands of pods does not drift;
the collector converts to float only when it hands a value to prometheus-client.

The grammar is the one of the Kubernetes API (`<sign><number><suffix>`, where the suffix is a
binary SI prefix Ki..Ei, a decimal SI prefix n, u, m, k, M, G, T, P, E, or a decimal exponent
e<n>/E<n>). "1E" is one exa, "1E3" is a thousand.
"""

from __future__ import annotations

import re
from decimal import Decimal

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[eE][+-]?[0-9]+|[numkMGTPE])?"
)

_BINARY = {prefix: Decimal(1024) ** power for power, prefix in enumerate("KMGTPE", start=1)}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


class InvalidQuantity(ValueError):
    """The text is not a Kubernetes quantity."""


def parse_quantity(text: str) -> Decimal:
    """The exact value of a quantity: cores for CPU, bytes for memory."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise InvalidQuantity(f"not a Kubernetes quantity: {text!r}")
    number = Decimal(match["number"])
    suffix = match["suffix"]
    if suffix is None:
        return number
    if suffix.endswith("i"):
        return number * _BINARY[suffix[0]]
    if len(suffix) > 1:
        return number.scaleb(int(suffix[1:]))
    return number * _DECIMAL[suffix]


def quantity_or_none(value: object) -> float | None:
    """A quantity from API JSON as a number; None when absent or malformed (never raises).

    One odd object must not take the whole cache down: its value is left out instead. Whole
    numbers (bytes, whole cores) come back as int: exact, and written without float formatting.
    """
    if not isinstance(value, str):
        return None
    try:
        exact = parse_quantity(value)
    except InvalidQuantity:
        return None
    return int(exact) if exact == exact.to_integral_value() else float(exact)
