from hypothesis import given
from hypothesis import strategies as st

from ledger.limits import (
    EffectiveLimit,
    GroupPolicy,
    LimitConfig,
    LimitSource,
    UserOverride,
    resolve_effective_limit,
)

ON = LimitConfig(enabled=True, default_limit_micros=50)


def test_disabled_limits_ignore_overrides() -> None:
    config = LimitConfig(enabled=False, default_limit_micros=50)
    result = resolve_effective_limit(config, UserOverride(limit_micros=10), [5])
    assert result == EffectiveLimit(None, LimitSource.DISABLED)


def test_user_override_wins_over_groups_and_default() -> None:
    result = resolve_effective_limit(ON, UserOverride(limit_micros=500), [5, 7])
    assert result == EffectiveLimit(500, LimitSource.USER)


def test_unlimited_override_exempts_the_user() -> None:
    result = resolve_effective_limit(ON, UserOverride(unlimited=True), [5])
    assert result == EffectiveLimit(None, LimitSource.USER)


def test_lowest_group_limit_wins_by_default() -> None:
    assert resolve_effective_limit(ON, None, [200, 20, None]) == EffectiveLimit(20,
                                                                                LimitSource.GROUP)


def test_highest_group_limit_with_the_option() -> None:
    config = LimitConfig(enabled=True, group_policy=GroupPolicy.HIGHEST, default_limit_micros=1)
    assert resolve_effective_limit(config, None, [200, 20]) == EffectiveLimit(200,
                                                                              LimitSource.GROUP)


def test_groups_without_a_limit_are_ignored() -> None:
    assert resolve_effective_limit(ON, None, [None, None]) == EffectiveLimit(50,
                                                                             LimitSource.DEFAULT)


def test_no_default_means_no_limit() -> None:
    config = LimitConfig(enabled=True)
    assert resolve_effective_limit(config, None, []) == EffectiveLimit(None, LimitSource.NONE)


def reference(enabled: bool, policy: GroupPolicy, default: int | None,
              override: UserOverride | None, groups: list[int | None]) -> EffectiveLimit:
    """The rules written as plainly as possible, one case after another."""
    if not enabled:
        return EffectiveLimit(None, LimitSource.DISABLED)
    if override is not None and override.unlimited:
        return EffectiveLimit(None, LimitSource.USER)
    if override is not None and override.limit_micros is not None:
        return EffectiveLimit(override.limit_micros, LimitSource.USER)
    best = None
    for limit in groups:
        if limit is None:
            continue
        if best is None or (limit < best if policy is GroupPolicy.LOWEST else limit > best):
            best = limit
    if best is not None:
        return EffectiveLimit(best, LimitSource.GROUP)
    if default is not None:
        return EffectiveLimit(default, LimitSource.DEFAULT)
    return EffectiveLimit(None, LimitSource.NONE)


limits = st.integers(min_value=1, max_value=10**12)
overrides = st.one_of(st.none(), st.builds(UserOverride, limit_micros=limits),
                      st.just(UserOverride(unlimited=True)))


@given(st.booleans(), st.sampled_from(GroupPolicy), st.one_of(st.none(), limits), overrides,
       st.lists(st.one_of(st.none(), limits), max_size=8))
def test_matches_the_brute_force_reference(enabled: bool, policy: GroupPolicy,
                                           default: int | None, override: UserOverride | None,
                                           groups: list[int | None]) -> None:
    config = LimitConfig(enabled=enabled, group_policy=policy, default_limit_micros=default)
    assert resolve_effective_limit(config, override, groups) == reference(
        enabled, policy, default, override, groups)
