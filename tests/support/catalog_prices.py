"""What genai-prices' own calculator says a message costs, in the ledger's micro-dollars."""

from __future__ import annotations

import math
from datetime import datetime

from genai_prices import Usage, calc_price

from ledger.pricing import Billing
from ledger.tokens import TokenUsage


def catalog_micros(provider: str, name: str, usage: TokenUsage, billing: Billing,
                   at: datetime) -> int:
    """`ceil(calc_price(...).total_price x 1,000,000)` for the usage as the ledger counts it
    (the catalog's `input_tokens` is the total input, cache reads and writes included)."""
    writes = usage.cache_write + usage.cache_write_1h
    context = dict(billing.context())
    price = calc_price(
        Usage(input_tokens=usage.input + usage.cache_read + writes,
              output_tokens=usage.output, cache_read_tokens=usage.cache_read,
              cache_write_tokens=writes, cache_write_1h_tokens=usage.cache_write_1h,
              web_searches=billing.web_searches),
        name, provider_id=provider, genai_request_timestamp=at, price_context=context or None)
    return math.ceil(price.total_price * 1_000_000)
