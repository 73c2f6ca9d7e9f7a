"""Which metric names a PromQL expression reads, to prove rules use only metrics that exist.

Not a PromQL parser: string literals, label matchers, ranges and grouping clauses are removed,
then every identifier that is not a keyword and not a function call is a metric name. That is
exact for the expressions agentmeter writes, and a test pins it on each construct they use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "offset", "bool", "inf", "nan", "atan2", "by", "without", "on",
     "ignoring", "group_left", "group_right"}
)  # fmt: skip
# PromQL inside an annotation: the raw strings handed to `query` (`printf` formats included).
_TEMPLATE_QUERY = re.compile(r"`([^`]*)`")

EXTERNAL_METRICS_FILE = Path(__file__).resolve().parents[2] / "alerts" / "external_metrics.txt"


def metric_names(expr: str) -> frozenset[str]:
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return frozenset(name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS)


def rule_metric_names(documents: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Every metric name read by the rules' expressions and their annotation queries."""
    names: set[str] = set()
    for document in documents:
        for group in document["groups"]:
            for rule in group["rules"]:
                names |= metric_names(rule["expr"])
                for text in rule.get("annotations", {}).values():
                    for query in _TEMPLATE_QUERY.findall(text):
                        names |= metric_names(query)
    return frozenset(names)


def external_metrics(path: Path = EXTERNAL_METRICS_FILE) -> frozenset[str]:
    """The declared list of metrics other software exports (cAdvisor, coderd, Prometheus)."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.add(name)
    return frozenset(names)
