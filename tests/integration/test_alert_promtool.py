"""The rule files, their promtool tests and the Alertmanager example, checked by the real tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentmeter.alert_rules import ALERTS_DIR, AREAS, RULES_DIR, write_scaled
from tests.support.requirements import require_binary

pytestmark = pytest.mark.prometheus
ALERTMANAGER_EXAMPLE = ALERTS_DIR / "alertmanager.example.yml"


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warn" not in output.lower(), output


def test_promtool_check_rules_passes_without_warnings() -> None:
    promtool = require_binary("promtool")
    files = [str(RULES_DIR / f"{area}.yaml") for area in AREAS]
    _assert_clean(_run(promtool, "check", "rules", *files))


def test_promtool_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    files = sorted(str(p) for p in (ALERTS_DIR / "tests").glob("*.test.yaml"))
    assert len(files) == len(AREAS)
    result = _run(promtool, "test", "rules", *files)
    _assert_clean(result)
    assert result.stdout.count("SUCCESS") == len(files)


def test_scaled_copies_are_valid_rules(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    paths = write_scaled(tmp_path, 60)
    _assert_clean(_run(promtool, "check", "rules", *map(str, paths)))


def test_promtool_catches_a_broken_expectation(tmp_path: Path) -> None:
    """The unit tests are real: a wrong expected annotation makes promtool fail."""
    promtool = require_binary("promtool")
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / "exporter.yaml").write_text(
        (RULES_DIR / "exporter.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    suite = (ALERTS_DIR / "tests" / "exporter.test.yaml").read_text(encoding="utf-8")
    broken = suite.replace("Collector kubernetes of exporter", "Collector ledger of exporter")
    assert broken != suite
    (tmp_path / "tests" / "exporter.test.yaml").write_text(broken, encoding="utf-8")
    result = _run(promtool, "test", "rules", str(tmp_path / "tests" / "exporter.test.yaml"))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_alertmanager_example_is_valid() -> None:
    amtool = require_binary("amtool")
    result = _run(amtool, "check-config", str(ALERTMANAGER_EXAMPLE))
    _assert_clean(result)
    assert "2 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=AgentmeterUserSpendLimitReached", "severity=info", "user=alice"], "spend"),
        (["alertname=AgentmeterUserNearSpendLimit", "severity=info", "user=bob"], "spend"),
        (["alertname=AgentmeterLimiterDown", "severity=critical"], "pager"),
        (["alertname=AgentmeterModelsWithoutPricing", "severity=warning"], "team-chat"),
        (["alertname=AgentmeterWorkspaceUnderutilized", "severity=info"], "daily-digest"),
    ],
)
def test_alertmanager_example_routes_by_severity_and_spend(
    labels: list[str], receiver: str
) -> None:
    amtool = require_binary("amtool")
    result = _run(
        amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_EXAMPLE}", *labels
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver
