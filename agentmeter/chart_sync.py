"""Keeps the Helm chart's copies of the alert rules and the generated dashboards current.

Helm reads only files inside the chart, so the chart cannot point at alerts/ or dashboards/: it
carries copies under files/. alerts/ and dashboards/generated stay the one source; `make generate`
runs `python -m agentmeter.chart_sync` to refresh the copies, and CI runs it with `--check`, which
changes nothing and fails when a copy is stale, missing or left over from a deleted source.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = REPO_ROOT / "helm" / "agentmeter"


@dataclass(frozen=True)
class CopiedSet:
    """Files matching `pattern` in `source` (relative to the repository) mirrored to `target`
    (relative to the chart)."""

    source: str
    pattern: str
    target: str


COPIED_SETS: tuple[CopiedSet, ...] = (
    CopiedSet(source="alerts/rules", pattern="*.yaml", target="files/rules"),
    CopiedSet(source="dashboards/generated", pattern="*.json", target="files/dashboards"),
)


def _plan(chart_dir: Path, root: Path) -> tuple[dict[Path, bytes], list[Path]]:
    """What the chart's copies must contain, and the copies whose source no longer exists."""
    wanted: dict[Path, bytes] = {}
    leftovers: list[Path] = []
    for copied in COPIED_SETS:
        source_dir = root / copied.source
        target_dir = chart_dir / copied.target
        sources = sorted(source_dir.glob(copied.pattern)) if source_dir.is_dir() else []
        names = set()
        for source in sources:
            if source.is_file():
                names.add(source.name)
                wanted[target_dir / source.name] = source.read_bytes()
        if target_dir.is_dir():
            leftovers.extend(
                copy for copy in sorted(target_dir.glob(copied.pattern))
                if copy.is_file() and copy.name not in names
            )
    return wanted, leftovers


def stale(chart_dir: Path = CHART_DIR, root: Path | None = None) -> list[Path]:
    """Copies that `sync` would write or delete; empty when the chart is current."""
    wanted, leftovers = _plan(chart_dir, root if root is not None else chart_dir.parents[1])
    outdated = [
        path for path, content in wanted.items()
        if not path.is_file() or path.read_bytes() != content
    ]
    return sorted(outdated + leftovers)


def sync(chart_dir: Path = CHART_DIR, root: Path | None = None) -> list[Path]:
    """Bring the chart's copies in line with their sources; returns the paths written or deleted.

    `root` is the repository the sources are read from (default: two levels above the chart,
    as helm/agentmeter sits in the repository).
    """
    wanted, leftovers = _plan(chart_dir, root if root is not None else chart_dir.parents[1])
    changed: list[Path] = []
    for path, content in wanted.items():
        if path.is_file() and path.read_bytes() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        changed.append(path)
    for path in leftovers:
        path.unlink()
        changed.append(path)
    return sorted(changed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentmeter.chart_sync",
        description="Copy alerts/rules/*.yaml and dashboards/generated/*.json into the Helm chart.",
    )
    parser.add_argument("--chart", type=Path, default=CHART_DIR, help="chart directory")
    parser.add_argument("--root", type=Path, default=None,
                        help="repository holding alerts/ and dashboards/ "
                             "(default: two levels above --chart)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when a copy is stale")
    args = parser.parse_args(argv)
    if not (args.chart / "Chart.yaml").is_file():
        print(f"chart_sync: {args.chart} is not a chart directory (no Chart.yaml)", file=sys.stderr)
        return 2
    if args.check:
        outdated = stale(args.chart, args.root)
        for path in outdated:
            print(f"stale: {path}", file=sys.stderr)
        if outdated:
            print("chart_sync: the chart's copies are stale; run `make generate` "
                  "(python -m agentmeter.chart_sync)", file=sys.stderr)
            return 1
        return 0
    for path in sync(args.chart, args.root):
        print(f"updated: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
