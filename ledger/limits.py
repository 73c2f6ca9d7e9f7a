"""Limit configuration and the effective limit of a user (pure rules; storage in limit_store)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ledger.periods import Period


class LimitSource(StrEnum):
    DISABLED = "disabled"
    USER = "user"
    GROUP = "group"
    DEFAULT = "default"
    NONE = "none"


class GroupPolicy(StrEnum):
    LOWEST = "lowest"
    HIGHEST = "highest"


@dataclass(frozen=True, slots=True)
class LimitConfig:
    enabled: bool = False
    period: Period = Period.MONTH
    default_limit_micros: int | None = None
    group_policy: GroupPolicy = GroupPolicy.LOWEST


@dataclass(frozen=True, slots=True)
class UserOverride:
    """A per-user override: a positive limit, or `unlimited` (exempt)."""

    limit_micros: int | None = None
    unlimited: bool = False


@dataclass(frozen=True, slots=True)
class EffectiveLimit:
    limit_micros: int | None
    source: LimitSource


def resolve_effective_limit(
    config: LimitConfig,
    override: UserOverride | None,
    group_limits: Iterable[int | None],
) -> EffectiveLimit:
    """User override, else the lowest (or highest) group limit, else the default, else none."""
    if not config.enabled:
        return EffectiveLimit(None, LimitSource.DISABLED)
    if override is not None:
        if override.unlimited:
            return EffectiveLimit(None, LimitSource.USER)
        if override.limit_micros is not None:
            return EffectiveLimit(override.limit_micros, LimitSource.USER)
    limited = [limit for limit in group_limits if limit is not None]
    if limited:
        pick = min if config.group_policy is GroupPolicy.LOWEST else max
        return EffectiveLimit(pick(limited), LimitSource.GROUP)
    if config.default_limit_micros is not None:
        return EffectiveLimit(config.default_limit_micros, LimitSource.DEFAULT)
    return EffectiveLimit(None, LimitSource.NONE)
