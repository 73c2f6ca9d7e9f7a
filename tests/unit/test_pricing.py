from decimal import Decimal

import pytest

from ledger.errors import InvalidValue
from ledger.money import format_usd, usd_to_micros
from ledger.pricing import Pricing, cost_upper_bound, price_usage
from ledger.tokens import TokenUsage


def per_million(usd: str) -> int:
    return usd_to_micros(usd)


SONNET = Pricing(input=per_million("3"), output=per_million("15"),
                 cache_read=per_million("0.3"), cache_write=per_million("3.75"),
                 cache_write_1h=per_million("6"))


def test_ten_tokens_at_point_three_cost_three_micros_not_four() -> None:
    priced = price_usage(Pricing(input=per_million("0.3")), TokenUsage(input=10))
    assert priced.cost_micros == 3


def test_cost_is_rounded_up_to_the_micro_once_per_message() -> None:
    # 1 token at 0.3/1M = 0.3 micros -> 1; 2 kinds of 0.3 each sum to 0.6 -> 1, not 2.
    pricing = Pricing(input=per_million("0.3"), cache_read=per_million("0.3"))
    assert price_usage(pricing, TokenUsage(input=1)).cost_micros == 1
    assert price_usage(pricing, TokenUsage(input=1, cache_read=1)).cost_micros == 1
    assert price_usage(pricing, TokenUsage()).cost_micros == 0


def test_each_kind_is_priced_on_its_own() -> None:
    usage = TokenUsage(input=1000, output=2000, cache_read=30000, cache_write=400,
                       cache_write_1h=500)
    exact = (Decimal(1000) * 3 + Decimal(2000) * 15 + Decimal(30000) * Decimal("0.3")
             + Decimal(400) * Decimal("3.75") + Decimal(500) * 6)
    assert price_usage(SONNET, usage).cost_micros == int(exact)  # 3000+30000+9000+1500+3000
    assert price_usage(SONNET, usage).unpriced == TokenUsage()


def test_model_without_pricing_gives_an_unpriced_message() -> None:
    usage = TokenUsage(input=5, output=7)
    priced = price_usage(None, usage)
    assert priced.cost_micros is None
    assert priced.unpriced == usage


def test_pricing_with_neither_input_nor_output_is_unpriced() -> None:
    priced = price_usage(Pricing(cache_read=per_million("0.3")), TokenUsage(input=5, cache_read=5))
    assert priced.cost_micros is None


def test_used_kind_without_price_counts_as_unpriced_tokens() -> None:
    pricing = Pricing(input=per_million("1"), output=per_million("2"),
                      cache_write=per_million("1.25"))
    priced = price_usage(pricing, TokenUsage(input=100, output=10, cache_write_1h=1000))
    assert priced.cost_micros == 120
    assert priced.unpriced == TokenUsage(cache_write_1h=1000)


def test_upper_bound_uses_the_highest_input_side_price() -> None:
    # 1000 bytes at cache_write_1h's 6/1M and 100 output tokens at 15/1M.
    assert cost_upper_bound(SONNET, 1000, 100) == 6000 + 1500


@pytest.mark.parametrize(("usd", "micros"), [("50", 50_000_000), ("0.000001", 1), (0.3, 300_000),
                                             (12, 12_000_000), ("1e-6", 1)])
def test_usd_converts_exactly(usd: object, micros: int) -> None:
    assert usd_to_micros(usd) == micros


@pytest.mark.parametrize("bad", ["0.0000001", "abc", True, None, "nan", "inf"])
def test_amounts_finer_than_a_micro_or_not_numbers_are_refused(bad: object) -> None:
    with pytest.raises(InvalidValue):
        usd_to_micros(bad)


def test_format_usd() -> None:
    assert format_usd(50_000_000) == "$50.00"
    assert format_usd(3) == "$0.000003"
    assert format_usd(1_234_500) == "$1.2345"


def test_negative_token_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenUsage(input=-1)
