"""Shared builders: datasources, variables, queries and panels in the one house style.

Every builder takes the panel's unit and description as required arguments, so a panel without
them cannot be written; every query names its datasource through a dashboard variable, so the
JSON works against whatever Prometheus and PostgreSQL an operator has provisioned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attr
from grafanalib import core

# Grafana's PostgreSQL plugin id since Grafana 10.4 (older releases call it "postgres").
POSTGRES_TYPE = "grafana-postgresql-datasource"

PROMETHEUS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
LEDGER: dict[str, str] = {"type": POSTGRES_TYPE, "uid": "${ledger}"}
LOKI: dict[str, str] = {"type": "loki", "uid": "${loki}"}

GREEN, ORANGE, RED, BLUE = "green", "orange", "red", "blue"

Steps = list[dict[str, Any]]


def steps(base: str, *rest: tuple[float, str]) -> Steps:
    """Threshold steps: the base colour, then (value, colour) from that value on (inclusive)."""
    return [{"color": base, "value": None}, *({"color": c, "value": v} for v, c in rest)]


def selector(*matchers: str) -> str:
    """`{a, b}` from the non-empty matchers; '' when there are none."""
    parts = [m for m in matchers if m]
    return "{" + ", ".join(parts) + "}" if parts else ""


# Queries -------------------------------------------------------------------------------------


@attr.s(frozen=True)
class PromQuery:
    """A PromQL target in the shape Grafana 10's Prometheus query editor saves."""

    expr: str = attr.ib()
    legend: str = attr.ib(default="")
    ref_id: str = attr.ib(default="A")
    instant: bool = attr.ib(default=False)
    table: bool = attr.ib(default=False)

    def to_json_data(self) -> dict[str, Any]:
        return {
            "datasource": PROMETHEUS,
            "editorMode": "code",
            "expr": self.expr,
            "format": "table" if self.table else "time_series",
            "instant": self.instant,
            "legendFormat": self.legend or "__auto",
            "range": not self.instant,
            "refId": self.ref_id,
        }


@attr.s(frozen=True)
class SqlQuery:
    """A raw SQL target against the ledger (PostgreSQL) datasource."""

    sql: str = attr.ib()
    ref_id: str = attr.ib(default="A")

    def to_json_data(self) -> dict[str, Any]:
        return {
            "datasource": LEDGER,
            "editorMode": "code",
            "format": "table",
            "rawQuery": True,
            "rawSql": self.sql,
            "refId": self.ref_id,
        }


@attr.s(frozen=True)
class LokiQuery:
    expr: str = attr.ib()
    ref_id: str = attr.ib(default="A")

    def to_json_data(self) -> dict[str, Any]:
        return {
            "datasource": LOKI,
            "editorMode": "code",
            "expr": self.expr,
            "queryType": "range",
            "refId": self.ref_id,
        }


def refs(*queries: PromQuery) -> list[PromQuery]:
    """Give queries the distinct refIds A, B, C... in order."""
    return [attr.evolve(q, ref_id=chr(ord("A") + i)) for i, q in enumerate(queries)]


# Variables -----------------------------------------------------------------------------------


def datasource_variable(name: str, plugin: str, label: str, regex: str = "") -> core.Template:
    return core.Template(
        name=name, label=label, type="datasource", query=plugin, regex=regex or None,
        default="", refresh=1,
    )


def prometheus_variable() -> core.Template:
    return datasource_variable("datasource", "prometheus", "Prometheus")


def ledger_variable() -> core.Template:
    return datasource_variable("ledger", POSTGRES_TYPE, "Ledger (PostgreSQL)")


def loki_variable() -> core.Template:
    return datasource_variable("loki", "loki", "Loki (coderd logs)")


def textbox_variable(name: str, label: str) -> core.Template:
    return core.Template(name=name, label=label, type="textbox", query="", default="")


def prometheus_query_variable(name: str, label: str, query: str) -> core.Template:
    return core.Template(
        name=name, label=label, type="query", query=query, dataSource=PROMETHEUS,
        refresh=2, sort=1, default="",
    )


# Panels --------------------------------------------------------------------------------------


def _field_defaults(unit: str, thresholds: Steps | None, **extra: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, **extra}
    if thresholds is not None:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
    return defaults


def timeseries(
    title: str, *, description: str, unit: str, targets: Sequence[Any],
    stacked: bool = False, thresholds: Steps | None = None, threshold_line: bool = False,
    legend_calcs: Sequence[str] = ("mean", "max"), axis_label: str = "",
    min_value: int | None = None, max_value: int | None = None,
    overrides: Sequence[Mapping[str, Any]] = (),
) -> core.Panel:
    return core.TimeSeries(
        title=title, description=description, unit=unit, dataSource=PROMETHEUS,
        targets=list(targets), maxDataPoints=None, fillOpacity=20 if stacked else 8,
        stacking={"mode": "normal", "group": "A"} if stacked else {"mode": "none"},
        legendDisplayMode="table", legendPlacement="bottom", legendCalcs=list(legend_calcs),
        tooltipMode="multi", tooltipSort="desc", axisLabel=axis_label, lineWidth=1,
        thresholds=thresholds or steps(GREEN), thresholdType="absolute",
        thresholdsStyleMode="line" if threshold_line else "off",
        valueMin=min_value, valueMax=max_value, overrides=list(overrides),
    )


def stat(
    title: str, *, description: str, unit: str, targets: Sequence[Any],
    thresholds: Steps | None = None, decimals: int | None = None, no_value: str = "0",
    text_mode: str = "value", color_mode: str = "value", reduce: str = "lastNotNull",
    mappings: Sequence[Mapping[str, Any]] = (), datasource: Mapping[str, str] = PROMETHEUS,
) -> core.Panel:
    return core.Stat(
        title=title, description=description, format=unit, dataSource=dict(datasource),
        targets=list(targets), maxDataPoints=None, decimals=decimals, noValue=no_value,
        textMode=text_mode, colorMode=color_mode, graphMode="none", reduceCalc=reduce,
        thresholds=thresholds or steps(BLUE), color={"mode": "thresholds"},
        mappings=list(mappings), orientation="auto",
    )


def enum_mapping(values: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """A value mapping: raw value -> (text, colour)."""
    options = {
        raw: {"text": text, "color": color, "index": i}
        for i, (raw, (text, color)) in enumerate(values.items())
    }
    return {"type": "value", "options": options}


def column(name: str, *, cell: Mapping[str, Any] | None = None, **properties: Any
           ) -> dict[str, Any]:
    """A field override for one table column: unit, displayName, links...; `cell` sets how the
    cell is drawn (Grafana's custom.cellOptions, e.g. {"type": "gauge"})."""
    props = [{"id": key, "value": value} for key, value in properties.items()]
    if cell is not None:
        props.append({"id": "custom.cellOptions", "value": dict(cell)})
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


def table(
    title: str, *, description: str, unit: str, targets: Sequence[Any],
    columns: Sequence[Mapping[str, Any]] = (), transformations: Sequence[Mapping[str, Any]] = (),
    sort_by: str | None = None, datasource: Mapping[str, str] = PROMETHEUS,
    thresholds: Steps | None = None, paginate: bool = True, filterable: bool = False,
) -> core.Panel:
    sort = [core.TableSortByField(displayName=sort_by, desc=True)] if sort_by else []
    return core.Table(
        title=title, description=description, unit=unit, dataSource=dict(datasource),
        targets=list(targets), maxDataPoints=None, overrides=list(columns),
        transformations=list(transformations), sortBy=sort, filterable=filterable,
        thresholds=thresholds or steps(GREEN), colorMode="thresholds",
        extraJson={
            "options": {
                # Grafana 10+ paginates a table through its footer options.
                "footer": {"show": False, "reducer": ["sum"], "countRows": False,
                           "fields": "", "enablePagination": paginate},
                "cellHeight": "sm",
            },
        },
    )


def merge_and_rename(rename: Mapping[str, str], hide: Sequence[str] = ("Time",)) -> list[dict]:
    """Join instant table queries on their labels, hide the time column, name the values."""
    order = {name: i for i, name in enumerate(rename.values())}
    return [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {
            "excludeByName": dict.fromkeys(hide, True),
            "renameByName": dict(rename),
            "indexByName": order,
        }},
    ]


@attr.s
class BarGauge(core.Panel):
    """A Grafana 10 bar gauge (grafanalib's BarGauge still writes the pre-7 option layout)."""

    unit: str = attr.ib(default="none")
    min_value: float | None = attr.ib(default=None)
    max_value: float | None = attr.ib(default=None)
    display_mode: str = attr.ib(default="basic")

    def to_json_data(self) -> dict[str, Any]:
        return self.panel_json({
            "type": "bargauge",
            "fieldConfig": {
                "defaults": {"unit": self.unit, "min": self.min_value, "max": self.max_value,
                             "color": {"mode": "thresholds"}},
                "overrides": [],
            },
            "options": {
                "displayMode": self.display_mode,
                "orientation": "horizontal",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "showUnfilled": True,
                "valueMode": "color",
                "namePlacement": "auto",
                "sizing": "auto",
                "minVizHeight": 16,
                "minVizWidth": 8,
                "maxVizHeight": 300,
            },
        })


def bargauge(
    title: str, *, description: str, unit: str, targets: Sequence[Any], thresholds: Steps,
    min_value: float | None = None, max_value: float | None = None,
) -> core.Panel:
    # Passed as a mapping: mypy's attrs plugin cannot see the fields of grafanalib's base class.
    fields: dict[str, Any] = {
        "title": title, "description": description, "dataSource": PROMETHEUS,
        "targets": list(targets), "maxDataPoints": None, "thresholds": thresholds,
    }
    return BarGauge(unit=unit, min_value=min_value, max_value=max_value, **fields)


def logs(title: str, *, description: str, targets: Sequence[Any]) -> core.Panel:
    return core.Logs(
        title=title, description=description, dataSource=LOKI, targets=list(targets),
        maxDataPoints=None, showTime=True, wrapLogMessages=True, enableLogDetails=True,
        extraJson={"fieldConfig": {"defaults": {"unit": "none"}}},
    )


def total(counter_name: str) -> str:
    """The exposed series of a counter declared without `_total` in ledger.metric_names."""
    return counter_name + "_total"


def bucket(histogram_name: str) -> str:
    return histogram_name + "_bucket"


def quantiles(histogram_name: str, matchers: str) -> list[PromQuery]:
    """p50/p95/p99 of a histogram over all its series, one query each."""
    return refs(*(
        PromQuery(
            f"histogram_quantile({q}, sum by (le) "
            f"(rate({bucket(histogram_name)}{matchers}[$__rate_interval])))",
            legend=f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ))
