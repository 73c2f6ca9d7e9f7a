"""`python -m agentmeter.alert_rules`: (re)generate the rule files, or check they are current.

python -m agentmeter.alert_rules --out alerts/rules            # what `make generate` runs
python -m agentmeter.alert_rules --check                       # CI: fail when out of date
python -m agentmeter.alert_rules --out DIR --set exporter_selector='job="exp"'
python -m agentmeter.alert_rules --out DIR --settings my-alerts.yaml --factor 60
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from agentmeter.alert_rules.build import (
    RULES_DIR,
    build_rules,
    render,
    scaled_rules,
    write_documents,
)
from agentmeter.alert_rules.scaling import DurationError
from agentmeter.alert_rules.settings import AlertSettings, AlertSettingsError


def _settings(args: argparse.Namespace) -> AlertSettings:
    overrides: dict[str, object] = {}
    if args.settings is not None:
        loaded = yaml.safe_load(Path(args.settings).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise AlertSettingsError(f"{args.settings}: expected a mapping of alert settings")
        overrides.update(loaded)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise AlertSettingsError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = value
    return AlertSettings().with_overrides(overrides)


def _stale(directory: Path) -> list[str]:
    stale = []
    for area, document in build_rules().items():
        path = directory / f"{area}.yaml"
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != render(document):
            stale.append(str(path))
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentmeter.alert_rules")
    parser.add_argument("--out", type=Path, default=RULES_DIR, help="directory to write")
    parser.add_argument("--settings", help="YAML file of alert setting overrides")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--factor", type=float, default=1.0, help="divide every duration by it")
    parser.add_argument("--check", action="store_true", help="fail if --out is not current")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = _stale(args.out)
            if stale:
                print(
                    "out of date (run python -m agentmeter.alert_rules): " + ", ".join(stale),
                    file=sys.stderr,
                )
                return 1
            return 0
        settings = _settings(args)
        documents = (
            build_rules(settings) if args.factor == 1.0 else scaled_rules(args.factor, settings)
        )
        for path in write_documents(documents, args.out):
            print(path)
    except (AlertSettingsError, DurationError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
