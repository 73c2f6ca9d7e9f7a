"""The estimate used when a provider's counts are missing: exact counts always win."""

from __future__ import annotations

from ledger.tokens import TokenUsage
from limiter.relay.dialects.base import CHARS_PER_TOKEN, estimate_tokens, settle_usage


def test_final_counts_are_kept_exactly() -> None:
    known = TokenUsage(input=3, output=2)
    assert settle_usage(known, output_final=True, request_bytes=10_000,
                        output_chars=10_000) == (known, False)


def test_nothing_known_estimates_input_from_request_and_output_from_text() -> None:
    assert settle_usage(None, output_final=False, request_bytes=4001, output_chars=40) == (
        TokenUsage(input=1001, output=10), True)


def test_known_input_side_stays_exact_and_output_is_at_least_the_estimate() -> None:
    known = TokenUsage(input=50, output=1, cache_read=700, cache_write_1h=9)
    usage, estimated = settle_usage(known, output_final=False, request_bytes=99_999,
                                    output_chars=41)
    assert estimated
    assert usage == TokenUsage(input=50, output=11, cache_read=700, cache_write_1h=9)
    # A provisional count above the estimate is not lowered.
    assert settle_usage(TokenUsage(output=30), output_final=False, request_bytes=0,
                        output_chars=4)[0].output == 30


def test_estimate_rounds_up() -> None:
    assert CHARS_PER_TOKEN == 4
    assert [estimate_tokens(n) for n in (0, 1, 4, 5, -3)] == [0, 1, 1, 2, 0]
