"""Feeding a stream parser the bytes of a stream cut at given offsets, as TCP may deliver them."""

from __future__ import annotations

from typing import TypeVar

from limiter.relay.sse import StreamUsageParser

Parser = TypeVar("Parser", bound=StreamUsageParser)


def feed_split(parser: Parser, data: bytes, cuts: list[int]) -> Parser:
    """`parser` after reading `data` in pieces cut at `cuts` (any order, repeats allowed) and
    closing."""
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        parser.feed(data[previous:cut])
        previous = cut
    parser.close()
    return parser
