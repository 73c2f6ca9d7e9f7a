"""Render every dashboard to the JSON that is committed (and that CI regenerates byte for byte).

Output is deterministic: sorted keys, two-space indent, a trailing newline, and no keys that
grafanalib leaves at null on a panel or variable (Grafana treats them as absent anyway).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grafanalib import core
from grafanalib._gen import DashboardEncoder

from dashboards import compute, control_plane, limits, usage, user_detail
from dashboards.config import DashboardConfig

GENERATED_DIR = Path(__file__).parent / "generated"

# File name (without .json) -> builder; one module per dashboard.
DASHBOARDS: dict[str, Callable[[DashboardConfig], core.Dashboard]] = {
    "usage": usage.build,
    "user-detail": user_detail.build,
    "limits": limits.build,
    "compute": compute.build,
    "control-plane": control_plane.build,
}

# Legacy top-level keys grafanalib writes for pre-5 Grafana; schema 39 has no use for them.
_LEGACY_DASHBOARD_KEYS = ("rows", "hideControls", "sharedCrosshair", "style", "__inputs", "id",
                          "gnetId")


def _drop_nulls(panel: dict[str, Any]) -> dict[str, Any]:
    cleaned = {key: value for key, value in panel.items() if value is not None}
    if "panels" in cleaned:
        cleaned["panels"] = [_drop_nulls(p) for p in cleaned["panels"]]
    return cleaned


def to_json_data(dashboard: core.Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON data, cleaned of grafanalib's legacy and null keys."""
    data: dict[str, Any] = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
    for key in _LEGACY_DASHBOARD_KEYS:
        data.pop(key, None)
    data["panels"] = [_drop_nulls(p) for p in data["panels"]]
    data["templating"]["list"] = [_drop_nulls(v) for v in data["templating"]["list"]]
    return data


def render(dashboard: core.Dashboard) -> str:
    return json.dumps(to_json_data(dashboard), sort_keys=True, indent=2,
                      ensure_ascii=False) + "\n"


def build_all(out_dir: Path, config: DashboardConfig | None = None) -> list[Path]:
    """Write one `<name>.json` per dashboard into out_dir; returns the paths written."""
    config = config or DashboardConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in DASHBOARDS.items():
        path = out_dir / f"{name}.json"
        path.write_text(render(build(config)), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agentmeter dashboards build",
        description="Write the Grafana dashboards as JSON files.")
    parser.add_argument("--out", type=Path, default=GENERATED_DIR,
                        help=f"directory to write into (default: {GENERATED_DIR})")
    args = parser.parse_args(argv)
    for path in build_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
