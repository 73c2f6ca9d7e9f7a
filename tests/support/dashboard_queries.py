"""Every query of the generated dashboards, with Grafana's variables filled in, and a real
Prometheus to run them against.

Grafana is not available here, so this does what Grafana would: walk each dashboard's panels
(including those folded inside collapsed rows), pick the targets by datasource, replace the
template variables and macros, and send the PromQL to Prometheus' HTTP API.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.support.requirements import require_binary

GENERATED = Path(__file__).resolve().parents[2] / "dashboards" / "generated"


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # uid
    panel_id: int
    panel_title: str
    ref_id: str
    datasource_type: str  # prometheus | grafana-postgresql-datasource | loki
    text: str  # PromQL, SQL or LogQL as written in the dashboard
    instant: bool

    @property
    def where(self) -> str:
        return f"{self.dashboard} / {self.panel_title!r} ({self.ref_id})"


def load_dashboards(directory: Path = GENERATED) -> dict[str, dict[str, Any]]:
    """File stem -> dashboard JSON."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(directory.glob("*.json"))}


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels folded inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    queries = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            kind = source.get("type", "")
            text = target.get("rawSql", "") if "rawSql" in target else target.get("expr", "")
            queries.append(PanelQuery(
                dashboard=dashboard["uid"], panel_id=panel["id"], panel_title=panel["title"],
                ref_id=target["refId"], datasource_type=kind, text=text,
                instant=bool(target.get("instant", False)),
            ))
    return queries


def all_queries(directory: Path = GENERATED) -> list[PanelQuery]:
    return [q for d in load_dashboards(directory).values() for q in panel_queries(d)]


# Variables ------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace `$name`, `${name}` and `${name:format}` as Grafana does.

    Only the `sqlstring` format is supported (a quoted SQL literal with quotes doubled), the one
    the dashboards use. An unknown variable raises, so a query never runs half-filled.
    """
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        fmt = match.group(2)
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in {text!r}")
        value = values[name]
        if fmt is None:
            return value
        if fmt == "sqlstring":
            return "'" + value.replace("'", "''") + "'"
        raise ValueError(f"unsupported variable format {fmt!r}")

    return _VARIABLE.sub(replace, text)


def expand_sql(sql: str, start: datetime, end: datetime, values: Mapping[str, str]) -> str:
    """Grafana's PostgreSQL macros used by the dashboards, then the variables."""
    def rfc3339(moment: datetime) -> str:
        return "'" + moment.strftime("%Y-%m-%dT%H:%M:%SZ") + "'"

    expanded = sql.replace("$__timeFrom()", rfc3339(start)).replace("$__timeTo()", rfc3339(end))
    if "$__" in expanded:
        raise ValueError(f"unexpanded Grafana macro in {sql!r}")
    return substitute(expanded, values)


# PromQL ---------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][\w:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                       "group_left", "group_right", "inf", "nan", "Inf", "NaN"})


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression reads (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _LABEL_LISTS.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def range_selectors(expr: str) -> list[str]:
    """The contents of every `[...]` in an expression (range vectors and subqueries)."""
    return [m.group()[1:-1] for m in _RANGES.finditer(_STRING.sub('""', expr))]


# A running Prometheus -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    target: str  # host:port
    metrics_path: str = "/metrics"


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as answer:
            body: dict[str, Any] = json.load(answer)
        return body

    def query(self, expr: str, instant: bool, range_seconds: float) -> dict[str, Any]:
        """Run a query as a Grafana panel would: instant at now, or range over the last range."""
        now = time.time()
        if instant:
            return self.api("query", query=expr, time=f"{now:.3f}")
        return self.api("query_range", query=expr, start=f"{now - range_seconds:.3f}",
                        end=f"{now:.3f}", step="1")

    def wait_for_series(self, expr: str, timeout: float = 60.0) -> None:
        """Block until `expr` has at least `count` ... results: until scrapes have landed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.api("query", query=expr)["data"]["result"]:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"Prometheus has no result for {expr!r} after {timeout}s")


@contextmanager
def prometheus_server(jobs: list[ScrapeJob], interval_s: int = 1) -> Iterator[Prometheus]:
    """A real Prometheus scraping `jobs` every `interval_s` seconds, in a temporary directory."""
    binary = require_binary("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": f"{interval_s}s", "evaluation_interval": f"{interval_s}s",
                   "scrape_timeout": f"{interval_s}s"},
        "scrape_configs": [
            {"job_name": job.name, "metrics_path": job.metrics_path,
             "static_configs": [{"targets": [job.target]}]}
            for job in jobs
        ],
    }
    with tempfile.TemporaryDirectory(prefix="am-prom-") as tmp:
        config_path = Path(tmp) / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        log = (Path(tmp) / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        server = Prometheus(f"http://127.0.0.1:{port}")
        try:
            server.wait_for_series("up", timeout=60)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
            log.close()
