"""Time-scaled copies of the rules, so an end-to-end test sees an alert fire within seconds.

Only durations change: `for`, a group's `interval`, range selectors, subquery steps and offsets in
PromQL (in `expr` and in the queries inside annotation templates). Text inside PromQL string
literals — regular expressions, label values — is never touched.
"""

from __future__ import annotations

import copy
import re
from typing import Any

_UNITS_MS = {
    "y": 365 * 24 * 3_600_000,
    "w": 7 * 24 * 3_600_000,
    "d": 24 * 3_600_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1_000,
    "ms": 1,
}
_PART = r"\d+(?:ms|[ywdhms])"
_DURATION = re.compile(rf"(?:{_PART})+")
_PARTS = re.compile(r"(\d+)(ms|[ywdhms])")
_RANGE = re.compile(rf"\[(?P<range>(?:{_PART})+)(?::(?P<step>(?:{_PART})*))?\]")
_OFFSET = re.compile(rf"\boffset(?P<space>\s+)(?P<sign>-?)(?P<duration>(?:{_PART})+)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_TEMPLATE_QUERY = re.compile(r"`([^`]*)`")


class DurationError(ValueError):
    """A duration that Prometheus would not accept either."""


def parse_duration(text: str) -> int:
    """Milliseconds of a Prometheus duration such as `5m`, `1h30m` or `1500ms`."""
    if not _DURATION.fullmatch(text):
        raise DurationError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS_MS[unit] for n, unit in _PARTS.findall(text))


def format_duration(ms: int) -> str:
    """The way Prometheus prints a duration: `1h30m`, `15s`, `250ms`, `0s`."""
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS_MS.items():
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def scale_duration(text: str, factor: float, floor_ms: int = 0) -> str:
    scaled = round(parse_duration(text) / factor)
    return format_duration(max(scaled, floor_ms))


def scale_promql(expr: str, factor: float, min_range_ms: int) -> str:
    """Divides every range, subquery step and offset in `expr` by `factor` (ranges floored)."""

    def scale_range(match: re.Match[str]) -> str:
        text = "[" + scale_duration(match["range"], factor, min_range_ms)
        step = match["step"]
        if step is not None:
            text += ":" + (scale_duration(step, factor, 1) if step else "")
        return text + "]"

    def scale_offset(match: re.Match[str]) -> str:
        duration = scale_duration(match["duration"], factor)
        return f"offset{match['space']}{match['sign']}{duration}"

    def scale_code(code: str) -> str:
        return _OFFSET.sub(scale_offset, _RANGE.sub(scale_range, code))

    pieces, last = [], 0
    for literal in _STRING.finditer(expr):
        pieces.append(scale_code(expr[last : literal.start()]))
        pieces.append(literal.group(0))
        last = literal.end()
    pieces.append(scale_code(expr[last:]))
    return "".join(pieces)


def scale_template(text: str, factor: float, min_range_ms: int) -> str:
    """Scales the PromQL of `query` calls in an annotation (written as Go raw strings)."""
    return _TEMPLATE_QUERY.sub(
        lambda match: "`" + scale_promql(match.group(1), factor, min_range_ms) + "`", text
    )


def scale_document(
    document: dict[str, Any], factor: float, min_range: str = "1s"
) -> dict[str, Any]:
    """A copy of a rule file with every duration divided by `factor`."""
    if factor <= 0:
        raise ValueError(f"the scale factor must be positive, got {factor}")
    floor_ms = parse_duration(min_range)
    scaled = copy.deepcopy(document)
    for group in scaled["groups"]:
        if "interval" in group:
            group["interval"] = scale_duration(group["interval"], factor, 1_000)
        for rule in group["rules"]:
            rule["expr"] = scale_promql(rule["expr"], factor, floor_ms)
            if "for" in rule:
                rule["for"] = scale_duration(rule["for"], factor)
            for key, text in rule.get("annotations", {}).items():
                rule["annotations"][key] = scale_template(text, factor, floor_ms)
    return scaled
