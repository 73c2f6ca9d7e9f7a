"""Time-scaled copies of the rules change durations and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentmeter.alert_rules import build_rules, scaled_rules, write_scaled
from agentmeter.alert_rules.scaling import (
    DurationError,
    format_duration,
    parse_duration,
    scale_duration,
    scale_promql,
)

# Durations as they appear in the places scaling touches: `for`, ranges, steps, offsets.
_DURATION_SITES = re.compile(
    r"(?<=\[)[0-9a-z]+(?=[:\]])|(?<=:)[0-9a-z]+(?=\])|(?<=offset )[0-9a-z]+"
)


def _durations_blanked(value: object) -> object:
    if isinstance(value, dict):
        return {k: "D" if k == "for" else _durations_blanked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_durations_blanked(v) for v in value]
    if isinstance(value, str):
        return _DURATION_SITES.sub("D", value)
    return value


def test_durations_parse_and_print_as_prometheus_does() -> None:
    assert parse_duration("5m") == 300_000
    assert parse_duration("1h30m") == 5_400_000
    assert parse_duration("1500ms") == 1_500
    assert parse_duration("1d") == 86_400_000
    assert format_duration(5_400_000) == "1h30m"
    assert format_duration(1_500) == "1s500ms"
    assert format_duration(0) == "0s"
    for bad in ("", "5", "m5", "1.5m", "5 m"):
        with pytest.raises(DurationError):
            parse_duration(bad)


def test_scaling_divides_and_floors() -> None:
    assert scale_duration("15m", 60) == "15s"
    assert scale_duration("1d", 60) == "24m"
    assert scale_duration("5m", 1000, floor_ms=1000) == "1s"
    assert scale_duration("5m", 1000) == "300ms"


def test_promql_ranges_steps_and_offsets_scale_but_strings_do_not() -> None:
    expr = 'rate(x{path=~"/a[5m]"}[5m]) + max_over_time(y[1h:1m] offset 1d) + z offset -2h'
    assert scale_promql(expr, 60, 1000) == (
        'rate(x{path=~"/a[5m]"}[5s]) + max_over_time(y[1m:1s] offset 24m) + z offset -2m'
    )


def test_the_scaled_copy_changes_only_durations() -> None:
    original = build_rules()
    scaled = scaled_rules(60)
    assert _durations_blanked(scaled) == _durations_blanked(original)
    spend = scaled["spend"]["groups"][0]["rules"]
    assert [r["for"] for r in spend] == ["5s", "1s", "30s"]
    assert (
        "[6m]" in spend[2]["expr"] and "[6h]" in original["spend"]["groups"][0]["rules"][2]["expr"]
    )
    pricing = scaled["pricing"]["groups"][0]["rules"]
    assert "[1m]))" in pricing[1]["annotations"]["description"]
    assert pricing[1]["annotations"]["description"].startswith("In the last 1h, ")


def test_every_duration_is_divided(tmp_path: Path) -> None:
    original = build_rules()
    scaled = scaled_rules(30, min_range="1ms")
    for area, document in original.items():
        for before, after in zip(
            document["groups"][0]["rules"], scaled[area]["groups"][0]["rules"], strict=True
        ):
            assert parse_duration(after["for"]) * 30 == parse_duration(before["for"])
            old = _DURATION_SITES.findall(before["expr"])
            new = _DURATION_SITES.findall(after["expr"])
            assert [parse_duration(d) for d in old] == [parse_duration(d) * 30 for d in new]


def test_write_scaled_writes_every_area(tmp_path: Path) -> None:
    paths = write_scaled(tmp_path, 60)
    assert sorted(p.name for p in paths) == sorted(
        f"{a}.yaml" for a in ("spend", "pricing", "limiter", "exporter", "compute", "controlplane")
    )
    assert "for: 15s" in (tmp_path / "pricing.yaml").read_text(encoding="utf-8")


def test_a_non_positive_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        scaled_rules(0)
