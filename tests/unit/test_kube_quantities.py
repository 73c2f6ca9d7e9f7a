"""Kubernetes quantities are read exactly, in every form the API server and metrics-server write."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity as client_parse_quantity

from exporter.kubernetes.quantities import InvalidQuantity, parse_quantity, quantity_or_none


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100m", "0.1"),
        ("1.5", "1.5"),
        ("2", "2"),
        ("2Gi", "2147483648"),
        ("500M", "500000000"),
        ("1e3", "1000"),
        ("1E3", "1000"),
        ("1e-3", "0.001"),
        ("2E+2", "200"),
        ("12345n", "0.000012345"),
        ("10u", "0.00001"),
        ("100Ki", "102400"),
        ("1Mi", "1048576"),
        ("3Ti", "3298534883328"),
        ("1Pi", "1125899906842624"),
        ("1Ei", "1152921504606846976"),
        ("1k", "1000"),
        ("1G", "1000000000"),
        ("1T", "1000000000000"),
        ("1P", "1000000000000000"),
        ("1E", "1000000000000000000"),
        ("0.5Gi", "536870912"),
        (".5", "0.5"),
        ("5.", "5"),
        ("+1", "1"),
        ("-250m", "-0.25"),
        ("0", "0"),
        ("129e6", "129000000"),
        ("123456789012345678901234567890", "123456789012345678901234567890"),
    ],
)
def test_quantities_are_exact(text: str, expected: str) -> None:
    assert parse_quantity(text) == Decimal(expected)


@pytest.mark.parametrize(
    "text", ["", " 1", "1 ", "1K", "1ki", "1mi", "1Gb", "Gi", "m", ".", "1.2.3", "1e", "0x10",
             "1e3Gi", "--1", "1,5", "NaN", "inf"])
def test_malformed_quantities_are_refused(text: str) -> None:
    with pytest.raises(InvalidQuantity):
        parse_quantity(text)


def test_a_bad_value_in_api_json_is_left_out_not_raised() -> None:
    assert quantity_or_none("lots") is None
    assert quantity_or_none(None) is None
    assert quantity_or_none(4) is None
    assert quantity_or_none("250m") == 0.25


_NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=10**12).map(str),
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False).map(str),
)
_SUFFIXES = st.sampled_from(
    ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])


@given(_NUMBERS, _SUFFIXES)
def test_agrees_with_the_official_client_on_valid_quantities(number: str, suffix: str) -> None:
    assert parse_quantity(number + suffix) == client_parse_quantity(number + suffix)
