"""chart_sync keeps helm/agentmeter/files equal to alerts/rules and dashboards/generated."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmeter import chart_sync


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository tree with sources and an empty chart."""
    (tmp_path / "alerts" / "rules").mkdir(parents=True)
    (tmp_path / "alerts" / "tests").mkdir()
    (tmp_path / "dashboards" / "generated").mkdir(parents=True)
    (tmp_path / "alerts" / "rules" / "limiter.yaml").write_text("groups: []\n")
    (tmp_path / "alerts" / "rules" / "notes.md").write_text("not a rule file\n")
    (tmp_path / "alerts" / "tests" / "limiter.test.yaml").write_text("rule_files: []\n")
    (tmp_path / "dashboards" / "generated" / "usage.json").write_text('{"uid": "u"}\n')
    chart = tmp_path / "helm" / "agentmeter"
    chart.mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: agentmeter\nversion: 0.1.0\n")
    return tmp_path


def _chart(repo: Path) -> Path:
    return repo / "helm" / "agentmeter"


def _files(chart: Path) -> dict[str, str]:
    return {str(p.relative_to(chart)): p.read_text() for p in sorted((chart / "files").rglob("*"))
            if p.is_file()}


def test_sync_copies_rule_files_and_dashboards_only(repo: Path) -> None:
    chart = _chart(repo)
    changed = chart_sync.sync(chart)
    assert changed == [chart / "files/dashboards/usage.json", chart / "files/rules/limiter.yaml"]
    assert _files(chart) == {"files/dashboards/usage.json": '{"uid": "u"}\n',
                             "files/rules/limiter.yaml": "groups: []\n"}


def test_second_sync_changes_nothing(repo: Path) -> None:
    chart = _chart(repo)
    chart_sync.sync(chart)
    assert chart_sync.sync(chart) == []
    assert chart_sync.stale(chart) == []


def test_edited_source_is_stale_until_synced(repo: Path) -> None:
    chart = _chart(repo)
    chart_sync.sync(chart)
    (repo / "alerts" / "rules" / "limiter.yaml").write_text("groups: [{name: x, rules: []}]\n")
    assert chart_sync.stale(chart) == [chart / "files/rules/limiter.yaml"]
    assert chart_sync.sync(chart) == [chart / "files/rules/limiter.yaml"]
    assert (chart / "files/rules/limiter.yaml").read_text() == "groups: [{name: x, rules: []}]\n"


def test_copy_of_a_deleted_source_is_removed(repo: Path) -> None:
    chart = _chart(repo)
    chart_sync.sync(chart)
    (repo / "dashboards" / "generated" / "usage.json").unlink()
    (chart / "files" / "dashboards" / ".gitkeep").write_text("")
    assert chart_sync.stale(chart) == [chart / "files/dashboards/usage.json"]
    assert chart_sync.sync(chart) == [chart / "files/dashboards/usage.json"]
    assert not (chart / "files/dashboards/usage.json").exists()
    assert (chart / "files/dashboards/.gitkeep").exists()  # only copies are managed


def test_hand_edited_copy_is_stale(repo: Path) -> None:
    chart = _chart(repo)
    chart_sync.sync(chart)
    (chart / "files/rules/limiter.yaml").write_text("groups: [] # tweaked\n")
    assert chart_sync.stale(chart) == [chart / "files/rules/limiter.yaml"]


def test_missing_source_folders_mean_no_copies(tmp_path: Path) -> None:
    chart = tmp_path / "helm" / "agentmeter"
    chart.mkdir(parents=True)
    assert chart_sync.sync(chart) == []
    assert not (chart / "files").exists()


def test_check_mode_fails_on_stale_copies_and_changes_nothing(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = _chart(repo)
    assert chart_sync.main(["--chart", str(chart), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"stale: {chart / 'files/rules/limiter.yaml'}" in err
    assert "make generate" in err
    assert not (chart / "files").exists()


def test_cli_syncs_then_check_passes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = _chart(repo)
    assert chart_sync.main(["--chart", str(chart)]) == 0
    assert "updated:" in capsys.readouterr().out
    assert chart_sync.main(["--chart", str(chart), "--check"]) == 0
    assert capsys.readouterr().err == ""


def test_explicit_root(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    chart = tmp_path_factory.mktemp("elsewhere") / "agentmeter"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: agentmeter\nversion: 0.1.0\n")
    assert chart_sync.main(["--chart", str(chart), "--root", str(repo)]) == 0
    assert sorted(_files(chart)) == ["files/dashboards/usage.json", "files/rules/limiter.yaml"]


def test_not_a_chart_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert chart_sync.main(["--chart", str(tmp_path)]) == 2
    assert "no Chart.yaml" in capsys.readouterr().err


def test_repository_chart_copies_are_current() -> None:
    """CI fails here when alerts/ or dashboards/ changed without `make generate`."""
    assert chart_sync.stale() == [], "run: python -m agentmeter.chart_sync"
