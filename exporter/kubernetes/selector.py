"""Kubernetes label selectors ("com.coder.resource=true", "tier in (a,b),!canary"), matched locally.

The pod cache holds every pod of the cluster (the node provision ratios need them all), so the
workspace pods are picked out of it here rather than by the API server; the syntax and meaning are
those of `kubectl get -l`: `k=v`, `k==v`, `k!=v` (true when the label is absent too), `k`, `!k`,
`k in (a,b)`, `k notin (a,b)`, all of them ANDed. An empty selector matches every pod.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_KEY = r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?"
_SET_FORM = re.compile(rf"\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*")
_EQUALITY_FORM = re.compile(rf"\s*(?P<key>{_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>{_VALUE})\s*")
_EXISTS_FORM = re.compile(rf"\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*")
_VALUE_ONLY = re.compile(_VALUE)

Labels = Mapping[str, str]


class InvalidSelector(ValueError):
    """The text is not a Kubernetes label selector."""


@dataclass(frozen=True)
class _Requirement:
    key: str
    test: Callable[[Labels], bool]


def _split_requirements(text: str) -> list[str]:
    """Split at the commas that are not inside the parentheses of a set requirement."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _requirement(part: str, selector: str) -> _Requirement:
    if match := _SET_FORM.fullmatch(part):
        key = match["key"]
        values = frozenset(v.strip() for v in match["values"].split(","))
        if not all(_VALUE_ONLY.fullmatch(v) for v in values):
            raise InvalidSelector(f"bad value in label selector {selector!r}: {part.strip()!r}")
        if match["op"] == "in":
            return _Requirement(key, lambda labels: labels.get(key) in values)
        return _Requirement(key, lambda labels: labels.get(key) not in values)
    if match := _EQUALITY_FORM.fullmatch(part):
        key, value = match["key"], match["value"]
        if match["op"] == "!=":
            return _Requirement(key, lambda labels: labels.get(key) != value)
        return _Requirement(key, lambda labels: labels.get(key) == value)
    if match := _EXISTS_FORM.fullmatch(part):
        key = match["key"]
        if match["neg"]:
            return _Requirement(key, lambda labels: key not in labels)
        return _Requirement(key, lambda labels: key in labels)
    raise InvalidSelector(f"not a label selector: {selector!r} (at {part.strip()!r})")


class LabelSelector:
    """A parsed selector; `keys` are the only labels a pod record needs to keep to be matched."""

    def __init__(self, text: str) -> None:
        self.text = text
        parts = [] if not text.strip() else _split_requirements(text)
        self._requirements = [_requirement(part, text) for part in parts]
        self.keys = frozenset(r.key for r in self._requirements)

    def matches(self, labels: Labels) -> bool:
        return all(r.test(labels) for r in self._requirements)

    def __repr__(self) -> str:
        return f"LabelSelector({self.text!r})"
