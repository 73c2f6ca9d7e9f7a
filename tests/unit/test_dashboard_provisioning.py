"""The Grafana provisioning example and the README match the dashboards they describe."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.dashboard_queries import load_dashboards

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"
PROVISIONING = DASHBOARDS_DIR / "provisioning"


def _datasource_variable_plugins() -> set[str]:
    return {v["query"] for d in load_dashboards().values() for v in d["templating"]["list"]
            if v["type"] == "datasource"}


def test_example_provisions_a_datasource_for_every_datasource_variable() -> None:
    config = yaml.safe_load((PROVISIONING / "datasources.yaml").read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    types = {source["type"] for source in config["datasources"]}
    assert types == _datasource_variable_plugins()
    uids = [source["uid"] for source in config["datasources"]]
    assert len(uids) == len(set(uids))
    ledger = next(s for s in config["datasources"] if s["type"] == "grafana-postgresql-datasource")
    assert ledger["jsonData"]["database"]
    assert "password" not in ledger  # only in secureJsonData, from the environment
    assert ledger["secureJsonData"]["password"].startswith("$")


def test_example_file_provider_loads_a_folder_of_json() -> None:
    config = yaml.safe_load((PROVISIONING / "dashboards.yaml").read_text(encoding="utf-8"))
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["allowUiUpdates"] is False


def test_readme_lists_every_dashboard_with_its_uid_and_file() -> None:
    readme = (DASHBOARDS_DIR / "README.md").read_text(encoding="utf-8")
    for name, dashboard in load_dashboards().items():
        assert f"`{dashboard['uid']}`" in readme
        assert f"`{name}.json`" in readme
