"""Workspace pods are picked out of the pod cache with kubectl's label-selector rules."""

from __future__ import annotations

import pytest

from exporter.kubernetes.selector import InvalidSelector, LabelSelector

CODER = {"com.coder.resource": "true", "com.coder.user.username": "alice", "tier": "gpu"}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("com.coder.resource=true", CODER, True),
        ("com.coder.resource==true", CODER, True),
        ("com.coder.resource=true", {"com.coder.resource": "false"}, False),
        ("com.coder.resource=true", {}, False),
        ("tier!=cpu", CODER, True),
        ("tier!=gpu", CODER, False),
        ("tier!=gpu", {}, True),
        ("tier", CODER, True),
        ("!tier", CODER, False),
        ("!canary", CODER, True),
        ("tier in (cpu, gpu)", CODER, True),
        ("tier in (cpu)", CODER, False),
        ("tier notin (cpu,arm)", CODER, True),
        ("tier notin (gpu)", CODER, False),
        ("tier notin (gpu)", {}, True),
        ("com.coder.resource=true,tier in (gpu,tpu),!canary", CODER, True),
        ("com.coder.resource=true, tier=cpu", CODER, False),
        ("", {}, True),
        ("app.kubernetes.io/name=coder-workspace",
         {"app.kubernetes.io/name": "coder-workspace"}, True),
        ("empty=", {"empty": ""}, True),
    ],
)
def test_selector_semantics(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector(selector).matches(labels) is expected


def test_keys_are_the_labels_a_record_must_keep() -> None:
    selector = LabelSelector("com.coder.resource=true,tier in (a,b),!canary")
    assert selector.keys == {"com.coder.resource", "tier", "canary"}


@pytest.mark.parametrize("selector", ["a=b=c", "a in b", "=x", "a in (b", "a,,b", "a b",
                                      "a in (b c)", "a=(x)"])
def test_malformed_selectors_name_themselves(selector: str) -> None:
    with pytest.raises(InvalidSelector, match="selector"):
        LabelSelector(selector)
