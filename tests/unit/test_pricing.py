from decimal import Decimal

import pytest

from ledger.errors import InvalidValue
from ledger.money import format_usd, usd_to_micros
from ledger.pricing import (
    Billing,
    Fee,
    Gap,
    PricedUsage,
    PriceSheet,
    Pricing,
    UnboundedWebSearches,
    Variant,
    cost_upper_bound,
    price_message,
)
from ledger.tokens import TokenKind, TokenUsage


def per_million(usd: str) -> int:
    return usd_to_micros(usd)


def price_usage(pricing: Pricing | None, usage: TokenUsage) -> PricedUsage:
    return price_message(None if pricing is None else PriceSheet.flat(pricing), usage)


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
    assert cost_upper_bound(PriceSheet.flat(SONNET), 1000, 100) == 6000 + 1500


K = TokenKind
# A long-context model: above 200k total input every token costs the second price.
TIERED = PriceSheet(
    rates={K.INPUT: (3_000_000, 6_000_000), K.OUTPUT: (15_000_000, 22_500_000),
           K.CACHE_READ: (300_000, 600_000), K.CACHE_WRITE: (3_750_000, 7_500_000),
           K.CACHE_WRITE_1H: (6_000_000, 12_000_000)},
    thresholds=(200_000,),
    variants=(Variant("service_tier", "flex", {K.INPUT: (1_500_000, 3_000_000),
                                               K.OUTPUT: (7_500_000, 11_250_000)}),
              Variant("processing", "batch", {K.INPUT: (1_500_000, 3_000_000)})),
    fees={Fee.WEB_SEARCH: 10_000_000})


def test_the_threshold_counts_every_input_side_kind_and_reprices_output_too() -> None:
    below = TokenUsage(input=100_000, cache_read=50_000, cache_write=40_000,
                       cache_write_1h=10_000, output=1_000)  # total input exactly 200,000
    above = below._replace(input=100_001)
    assert price_message(TIERED, below).tier_start == 0
    assert price_message(TIERED, below).cost_micros == (300_000 + 15_000 + 150_000 + 60_000
                                                       + 15_000)
    priced = price_message(TIERED, TokenUsage(*above))
    assert priced.tier_start == 200_000
    assert priced.cost_micros == 600_006 + 30_000 + 300_000 + 120_000 + 22_500


def test_a_variant_replaces_the_prices_it_gives_and_keeps_the_others() -> None:
    usage = TokenUsage(input=1_000_000, output=1_000_000, cache_read=1_000_000)
    flex = price_message(TIERED, usage, Billing(service_tier="flex"))
    # Total input 2M is above the threshold: flex's tier prices, standard's cache read.
    assert flex.cost_micros == 3_000_000 + 11_250_000 + 600_000
    assert not flex.gaps
    batch = price_message(TIERED, TokenUsage(input=10, output=10), Billing(batch=True))
    assert batch.cost_micros == 15 + 150
    for standard in (Billing(service_tier="default"), Billing(service_tier="standard"),
                     Billing(speed="standard")):
        assert price_message(TIERED, usage, standard) == price_message(TIERED, usage)
    # Anthropic reports a batch request as its service tier.
    assert price_message(TIERED, usage, Billing(service_tier="batch")) == price_message(
        TIERED, usage, Billing(batch=True))


def test_a_service_tier_without_a_price_costs_the_highest_price_and_is_a_gap() -> None:
    usage = TokenUsage(input=10, output=10)
    priced = price_message(TIERED, usage, Billing(service_tier="priority"))
    assert priced.cost_micros == 60 + 225  # the tier prices: the highest the model has
    assert priced.gaps == {Gap.VARIANT}


def test_a_tier_that_leaves_out_a_priced_kind_costs_its_highest_price() -> None:
    sheet = PriceSheet(rates={K.INPUT: (1_000_000, 2_000_000), K.OUTPUT: (4_000_000, None)},
                       thresholds=(1_000,))
    priced = price_message(sheet, TokenUsage(input=2_000, output=10))
    assert priced.cost_micros == 4_000 + 40 and priced.gaps == {Gap.TIER}
    assert price_message(sheet, TokenUsage(input=10, output=10)).gaps == frozenset()


def test_web_searches_cost_their_fee_per_thousand() -> None:
    priced = price_message(TIERED, TokenUsage(input=10), Billing(web_searches=3))
    assert priced.cost_micros == 30 + 30_000
    unpriced = price_message(PriceSheet.flat(SONNET), TokenUsage(input=10),
                             Billing(web_searches=3))
    assert unpriced.cost_micros == 30
    assert unpriced.gaps == {Gap.FEE} and unpriced.unpriced_web_searches == 3


def test_bad_tiers_are_refused() -> None:
    with pytest.raises(ValueError, match="ascending"):
        PriceSheet(rates={K.INPUT: (1, 2, 3)}, thresholds=(200, 100))
    with pytest.raises(ValueError, match="non-negative"):
        PriceSheet(rates={K.INPUT: (1, -2)}, thresholds=(100,))


def test_strict_bound_reaches_the_tier_the_input_can_reach() -> None:
    # 300k bytes can pass the 200k threshold: every byte at the dearest input-side tier price
    # (1-hour cache writes, 12/1M), output at the tier's 22.5/1M.
    assert cost_upper_bound(TIERED, 300_000, 1_000, service_tier="default") == (
        3_600_000 + 22_500)
    # Below the threshold the base prices bound it.
    assert cost_upper_bound(TIERED, 1_000, 1_000, service_tier="default") == 6_000 + 15_000


def test_strict_bound_counts_auto_as_the_dearest_tier_and_bounds_searches() -> None:
    dear = PriceSheet(rates={K.INPUT: (1_000_000,), K.OUTPUT: (2_000_000,)},
                      variants=(Variant("service_tier", "priority",
                                        {K.INPUT: (2_000_000,), K.OUTPUT: (4_000_000,)}),),
                      fees={Fee.WEB_SEARCH: 10_000_000})
    assert cost_upper_bound(dear, 1_000, 1_000) == 2_000 + 4_000
    assert cost_upper_bound(dear, 1_000, 1_000, service_tier="auto") == 6_000
    assert cost_upper_bound(dear, 1_000, 1_000, service_tier="default") == 3_000
    assert cost_upper_bound(dear, 1_000, 1_000, service_tier="default",
                            web_searches=5) == 3_000 + 50_000
    with pytest.raises(UnboundedWebSearches, match="max_uses"):
        cost_upper_bound(dear, 1_000, 1_000, web_searches=None)


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
