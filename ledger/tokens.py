"""Token kinds and the per-request usage record shared by the limiter, ledger and exporter."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum


class TokenKind(StrEnum):
    INPUT = "input"
    OUTPUT = "output"
    CACHE_READ = "cache_read"
    CACHE_WRITE = "cache_write"
    CACHE_WRITE_1H = "cache_write_1h"


TOKEN_KINDS: tuple[TokenKind, ...] = tuple(TokenKind)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens of one answered request, one field per `TokenKind` (output includes reasoning)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"token count {f.name} must be a non-negative integer: {value!r}")

    def get(self, kind: TokenKind) -> int:
        return int(getattr(self, kind.value))

    def items(self) -> list[tuple[TokenKind, int]]:
        return [(kind, self.get(kind)) for kind in TOKEN_KINDS]

    @property
    def total(self) -> int:
        return sum(count for _, count in self.items())
