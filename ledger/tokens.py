"""Token kinds and the per-request usage record shared by the limiter, ledger and exporter."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple


class TokenKind(StrEnum):
    INPUT = "input"
    OUTPUT = "output"
    CACHE_READ = "cache_read"
    CACHE_WRITE = "cache_write"
    CACHE_WRITE_1H = "cache_write_1h"


TOKEN_KINDS: tuple[TokenKind, ...] = tuple(TokenKind)


class _Counts(NamedTuple):
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0


class TokenUsage(_Counts):
    """Tokens of one answered request, one field per `TokenKind` (output includes reasoning).

    An immutable tuple: the exporter builds tens of thousands per scrape, so trusted rows use
    `from_counts` (no checks) while everything else goes through the checked constructor.
    """

    __slots__ = ()

    def __new__(cls, input: int = 0, output: int = 0, cache_read: int = 0,
                cache_write: int = 0, cache_write_1h: int = 0) -> TokenUsage:
        counts = (input, output, cache_read, cache_write, cache_write_1h)
        for kind, value in zip(TOKEN_KINDS, counts, strict=True):
            if type(value) is not int or value < 0:
                raise ValueError(f"token count {kind.value} must be a non-negative integer: "
                                 f"{value!r}")
        return super().__new__(cls, *counts)

    @classmethod
    def from_counts(cls, counts: Sequence[int]) -> TokenUsage:
        """Counts in `TOKEN_KINDS` order from a trusted source (a ledger row), unchecked."""
        return tuple.__new__(cls, counts)

    def get(self, kind: TokenKind) -> int:
        return int(getattr(self, kind.value))

    def items(self) -> list[tuple[TokenKind, int]]:
        return list(zip(TOKEN_KINDS, self, strict=True))

    @property
    def total(self) -> int:
        return sum(self)
