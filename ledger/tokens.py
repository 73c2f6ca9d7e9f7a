"""Token kinds and the per-request usage record shared by the limiter, ledger and exporter."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TokenKind(StrEnum):
    INPUT = "input"
    OUTPUT = "output"
    CACHE_READ = "cache_read"
    CACHE_WRITE = "cache_write"
    CACHE_WRITE_1H = "cache_write_1h"


TOKEN_KINDS: tuple[TokenKind, ...] = tuple(TokenKind)
_FIELD_NAMES: tuple[str, ...] = tuple(kind.value for kind in TOKEN_KINDS)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens of one answered request, one field per `TokenKind` (output includes reasoning)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0

    def __post_init__(self) -> None:
        # Runs for every row a scrape reads: plain loops over a constant tuple, no reflection.
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"token count {name} must be a non-negative integer: {value!r}")

    def get(self, kind: TokenKind) -> int:
        return int(getattr(self, kind.value))

    def items(self) -> list[tuple[TokenKind, int]]:
        return [(kind, self.get(kind)) for kind in TOKEN_KINDS]

    @property
    def total(self) -> int:
        return sum(count for _, count in self.items())
