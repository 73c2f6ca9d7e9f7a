"""The committed renderings in tests/golden/chart equal what the chart renders now.

A change to a template, a default, alerts/ or dashboards/ shows up as a reviewed diff of the
rendered manifests. Regenerate with:

    python -m agentmeter.chart_sync && python -m tests.support.chart_render
"""

from __future__ import annotations

import difflib

import pytest

from tests.support import chart_render as cr

CASES = cr.values_cases()
REGENERATE = "python -m agentmeter.chart_sync && python -m tests.support.chart_render"


def test_one_golden_file_per_values_case() -> None:
    present = sorted(p.stem for p in cr.GOLDEN_DIR.glob("*.yaml"))
    assert present == sorted(CASES), f"regenerate with: {REGENERATE}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendering_equals_the_golden_file(case: str) -> None:
    path = cr.golden_path(case)
    assert path.is_file(), f"{path} is missing; regenerate with: {REGENERATE}"
    golden = path.read_text(encoding="utf-8")
    rendered = cr.golden_text(CASES[case])
    if rendered != golden:
        diff = "".join(difflib.unified_diff(
            golden.splitlines(keepends=True), rendered.splitlines(keepends=True),
            fromfile=str(path), tofile="rendered", n=2))
        pytest.fail(f"rendering changed; review, then regenerate with: {REGENERATE}\n"
                    f"{diff[:6000]}")
