"""Rendering the Helm chart the way `helm template` does, offline, through helm-python-sdk.

Also writes the golden renderings (tests/golden/chart/*.yaml) that CI compares against:

    python -m agentmeter.chart_sync && python -m tests.support.chart_render

Every test renders with the same release name and namespace so names in the golden files are stable.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "agentmeter"
GOLDEN_DIR = REPO_ROOT / "tests" / "golden" / "chart"
RELEASE = "agentmeter"
NAMESPACE = "agentmeter"
# API groups kubernetes-validate has no schema for; their manifests are checked field by field.
CUSTOM_API_GROUPS = ("monitoring.coreos.com/",)
# libyaml's loader when PyYAML has it: the dashboard ConfigMaps are large.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _helm() -> Any:
    try:
        import helm_python
    except ImportError:
        from tests.support.requirements import missing

        missing("the helm-python-sdk package (pip install helm-python-sdk)")
    return helm_python


def ci_values_files(chart_dir: Path = CHART_DIR) -> list[Path]:
    """The chart's ci/*.yaml values files, as chart-testing lays them out."""
    return sorted((chart_dir / "ci").glob("*.yaml"))


def load_values(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def values_cases(chart_dir: Path = CHART_DIR) -> dict[str, dict[str, Any]]:
    """The values every rendering check runs with: the defaults, then each ci/*.yaml file."""
    cases: dict[str, dict[str, Any]] = {"default": {}}
    for path in ci_values_files(chart_dir):
        cases[path.stem] = load_values(path)
    return cases


def render(values: Mapping[str, Any] | None = None, chart_dir: Path = CHART_DIR) -> dict[str, str]:
    """Template path -> rendered text.

    Raises helm_python.HelmValuesError on values the schema refuses.
    """
    return dict(_render_cached(json.dumps(values or {}, sort_keys=True), str(chart_dir)))


@functools.lru_cache(maxsize=128)
def _render_cached(values_json: str, chart_dir: str) -> tuple[tuple[str, str], ...]:
    """Rendering is pure (no cluster, no clock): the same values and chart give the same text.

    Keyed on the chart path too; tests that edit a chart use a fresh temporary copy.
    """
    helm = _helm()
    with helm.Chart.load(chart_dir) as chart:
        rendered: dict[str, str] = chart.render(
            json.loads(values_json), name=RELEASE, namespace=NAMESPACE)
    return tuple(sorted(rendered.items()))


def manifests(values: Mapping[str, Any] | None = None,
              chart_dir: Path = CHART_DIR) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders (hooks included), in template-path order."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render(values, chart_dir).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        objects.extend(doc for doc in yaml.load_all(text, Loader=_LOADER) if doc)
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        obj for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def is_custom(obj: Mapping[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith(CUSTOM_API_GROUPS)


def lint(values: Mapping[str, Any] | None = None, chart_dir: Path = CHART_DIR) -> list[str]:
    """`helm lint --strict` findings worse than information (warnings count, as with --strict)."""
    helm = _helm()
    report = helm.lint(chart_dir, dict(values or {}), strict=True)
    problems = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return problems + [str(error) for error in report["errors"]]


def golden_text(values: Mapping[str, Any] | None = None, chart_dir: Path = CHART_DIR) -> str:
    """One YAML stream of every rendered manifest, each headed by its source, as `helm template`
    prints it (NOTES.txt, not a manifest, is left out)."""
    parts = []
    for path, text in sorted(render(values, chart_dir).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        body = text.strip("\n")
        if body.strip():
            parts.append(f"# Source: {path}\n{body}\n")
    return "---\n".join(parts)


def golden_path(case: str) -> Path:
    return GOLDEN_DIR / f"{case}.yaml"


def write_goldens(chart_dir: Path = CHART_DIR) -> list[Path]:
    """Rewrite tests/golden/chart/ from the current chart; returns the files written."""
    cases = values_cases(chart_dir)
    if GOLDEN_DIR.is_dir():
        shutil.rmtree(GOLDEN_DIR)
    GOLDEN_DIR.mkdir(parents=True)
    written = []
    for case, values in cases.items():
        path = golden_path(case)
        path.write_text(golden_text(values, chart_dir), encoding="utf-8")
        written.append(path)
    return written


def copy_chart(destination: Path, rules: Mapping[str, str] | None = None,
               dashboards: Mapping[str, str] | None = None) -> Path:
    """A copy of the chart whose files/ holds exactly the given rule and dashboard files."""
    chart = destination / "agentmeter"
    shutil.copytree(CHART_DIR, chart)
    for folder, files in (("rules", rules), ("dashboards", dashboards)):
        target = chart / "files" / folder
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name, text in (files or {}).items():
            (target / name).write_text(text, encoding="utf-8")
    return chart


def iter_containers(pod_spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec.get("containers", [])


def main() -> int:
    for path in write_goldens():
        print(f"written: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
