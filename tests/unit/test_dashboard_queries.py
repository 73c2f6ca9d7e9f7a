"""The query extraction the dashboard proofs rely on: if it misread PromQL, they would prove
nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support.dashboard_queries import (
    all_queries,
    expand_sql,
    metric_names,
    range_selectors,
    substitute,
)


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (user) (rate(agentmeter_spend_usd_total{job="x"}[$__rate_interval])) * 3600',
     {"agentmeter_spend_usd_total"}),
    ("count(a_ratio >= 0.8 < 1) or vector(0)", {"a_ratio"}),
    ("(x / y) * on (namespace, pod) group_left (username, workspace) info{job=\"e\"}",
     {"x", "y", "info"}),
    ("histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m])))", {"h_bucket"}),
    ("avg_over_time((a / b)[$__range:]) < 2e-1", {"a", "b"}),
    ('m{label="sum(other)", l2=~"a|b"} offset 5m', {"m"}),
    ("a and on (user) (b >= 0.8)", {"a", "b"}),
])
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_range_selectors_include_subqueries() -> None:
    assert range_selectors('rate(a{x="[1m]"}[$__rate_interval]) + avg_over_time(b[$__range:])'
                           ) == ["$__rate_interval", "$__range:"]


def test_substitute_fills_every_form() -> None:
    values = {"user": "o'neil", "__range": "1h"}
    assert substitute('x{user="$user"}[$__range]', values) == "x{user=\"o'neil\"}[1h]"
    assert substitute("${user}", values) == "o'neil"
    assert substitute("u = ${user:sqlstring}", values) == "u = 'o''neil'"


def test_substitute_refuses_unknown_variables_and_formats() -> None:
    with pytest.raises(KeyError, match="nope"):
        substitute("$nope", {})
    with pytest.raises(ValueError, match="csv"):
        substitute("${user:csv}", {"user": "a"})


def test_expand_sql_writes_grafana_time_literals() -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    end = datetime(2026, 1, 3, tzinfo=UTC)
    sql = "a >= $__timeFrom() AND a < $__timeTo() AND u = ${user:sqlstring}"
    assert expand_sql(sql, start, end, {"user": "bob"}) == (
        "a >= '2026-01-02T03:04:05Z' AND a < '2026-01-03T00:00:00Z' AND u = 'bob'")


def test_expand_sql_refuses_unknown_macros() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="macro"):
        expand_sql("WHERE $__timeFilter(created_at)", now, now, {})


def test_every_dashboard_query_is_found() -> None:
    queries = all_queries()
    kinds = {q.datasource_type for q in queries}
    assert kinds == {"prometheus", "grafana-postgresql-datasource", "loki"}
    assert len({(q.dashboard, q.panel_id, q.ref_id) for q in queries}) == len(queries)
    assert sum(q.datasource_type == "prometheus" for q in queries) > 50
