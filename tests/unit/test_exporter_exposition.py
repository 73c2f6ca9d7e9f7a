"""The fast exposition path says exactly what prometheus-client's encoders say, in both formats."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from exporter.exposition import render
from exporter.row_family import (
    LabelCache,
    LabelRows,
    RowFamily,
    format_value,
    render_label_rows,
)

# Where Go's float notation departs from repr(), and values that are not plain floats.
EDGES: list[int | float] = [999_999.999, 1e6, 1_000_000.5, 1e16, 1.5e300, -2.5e7, -0.0, 0.0, 1e-7,
                            3.9e-05, float("inf"), float("-inf"), float("nan"), True, 7]
ODD = ['quote"d', "back\\slash", "trailing\\", "new\nline", "emoji 🙂", "x" * 1024, ""]


class Families:
    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("agentmeter_test_gauge", 'Help with "quotes"\nand \\.',
                                  labels=["user", "model"])
        for i, user in enumerate(ODD):
            gauge.add_metric([user, "m"], i / 7)
        gauge.add_metric(["big", "m"], 1.7988768e9)
        gauge.add_metric(["inf", "m"], float("inf"))
        yield gauge
        counter = CounterMetricFamily("agentmeter_test_spend", "Spend.", labels=["user"])
        for user in ODD:
            counter.add_metric([user], 0.000039)
        yield counter
        rows = LabelRows(["user", "model"], [(user, "m") for user in ODD])
        yield RowFamily("agentmeter_test_rows", "Spend by row.", "counter", rows,
                        [0.5 + i for i in range(len(ODD))])
        yield RowFamily("agentmeter_test_kinds", "Tokens by kind.", "counter",
                        rows.expand("token_type", ["input", "output"]),
                        list(range(2 * len(ODD))))
        yield RowFamily("agentmeter_test_big", "Large counts.", "gauge",
                        LabelRows(["user"], [("a",), ("b",)]), [12_345_678_901, 1.7988768e9])
        yield RowFamily("agentmeter_test_edges", "Values at the edges of Go's notation.", "gauge",
                        LabelRows(["case"], [(repr(v),) for v in EDGES]), EDGES)
        yield GaugeMetricFamily("agentmeter_test_plain", "No labels.", value=3.0)
        yield GaugeMetricFamily("agentmeter_test_empty", "No samples.", labels=["user"])
        # Not simple: handed to prometheus-client's own encoder.
        yield CounterMetricFamily("agentmeter_test_created", "With created.", value=1.0,
                                  created=1700000000.0)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(Families())
    instrumented = Counter("agentmeter_test_events", "Events.", ["level"], registry=registry)
    instrumented.labels("error").inc(2)
    Histogram("agentmeter_test_seconds", "Durations.", registry=registry).observe(0.3)
    return registry


def _parsed(families: Iterator[Metric]) -> dict[str, tuple[str, str, list[str]]]:
    return {f.name: (f.type, f.documentation,
                     sorted(repr((s.name, sorted(s.labels.items()), float(s.value), s.timestamp))
                            for s in f.samples))
            for f in families}


@pytest.mark.parametrize(
    ("accept", "reference", "parse"),
    [("", generate_latest, parse_text),
     ("application/openmetrics-text; version=1.0.0", generate_openmetrics, parse_openmetrics)],
)
def test_same_exposition_as_prometheus_client(accept, reference, parse) -> None:  # type: ignore[no-untyped-def]
    registry = _registry()
    body, content_type = render(registry, accept)
    expected = reference(registry).decode("utf-8")
    assert _parsed(parse(body.decode("utf-8"))) == _parsed(parse(expected))
    assert body.decode("utf-8").count("# TYPE") == expected.count("# TYPE")
    if accept:
        assert content_type.startswith("application/openmetrics-text; version=1.0.0")
        assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
    else:
        assert content_type.startswith("text/plain; version=0.0.4")


def test_label_values_are_escaped() -> None:
    body, _ = render(_registry(), "")
    text = body.decode("utf-8")
    assert 'agentmeter_test_spend_total{user="quote\\"d"} 3.9e-05' in text
    assert 'agentmeter_test_spend_total{user="new\\nline"} 3.9e-05' in text
    assert 'agentmeter_test_spend_total{user="trailing\\\\"} 3.9e-05' in text
    assert 'user="big",model="m"} 1.7988768e+09' in text
    assert 'user="inf",model="m"} +Inf' in text


def test_row_family_reads_like_any_family() -> None:
    rows = LabelRows(["user", "model"], [("alice", "m1"), ('b"ob', "m2")])
    family = RowFamily("agentmeter_test_tokens", "Tokens.", "counter",
                       rows.expand("token_type", ["input", "output"]), [1, 2, 3, 4])
    registry = CollectorRegistry()

    class One:
        def collect(self) -> Iterator[Metric]:
            yield family

    registry.register(One())
    labels = {"user": 'b"ob', "model": "m2", "token_type": "output"}
    assert registry.get_sample_value("agentmeter_test_tokens_total", labels) == 4
    assert len(family.samples) == 4


def test_row_family_refuses_mismatched_columns() -> None:
    rows = LabelRows(["user"], [("alice",)])
    with pytest.raises(ValueError, match="2 values for 1 label rows"):
        RowFamily("agentmeter_test_x", "X.", "gauge", rows, [1, 2])
    with pytest.raises(ValueError, match="gauges and counters"):
        RowFamily("agentmeter_test_x", "X.", "histogram", rows, [1])
    family = RowFamily("agentmeter_test_x", "X.", "gauge", rows, [1])
    with pytest.raises(AttributeError):
        family.samples = [family.samples[0]]


def test_format_value_writes_what_prometheus_client_writes() -> None:
    rng = random.Random(4)
    floats = [*(v for v in EDGES if type(v) is float),
              *(rng.uniform(-1, 1) * 10 ** rng.randint(-12, 20) for _ in range(20_000)),
              *(rng.randint(0, 10**13) / 1_000_000 for _ in range(20_000))]
    for number in floats:
        assert format_value(number) == floatToGoString(number), number
    # Integers (token counts) are written exactly; prometheus-client would write 7.0, the same
    # value for any parser. Booleans are numbers to prometheus-client, never "True".
    assert format_value(12_345_678_901) == "12345678901"
    assert format_value(True) == "1.0"


def test_label_cache_renders_only_new_rows_and_keeps_only_the_last_scrape() -> None:
    cache = LabelCache(["user", "model"])
    first_rows = [(user, "m") for user in ODD]
    first = cache.label_rows(first_rows)
    assert first.rendered == render_label_rows(["user", "model"], first_rows)
    assert len(cache) == len(ODD)

    # The next scrape: one user gone, one new; kept rows reuse the strings rendered before.
    second_rows = [(user, "m") for user in ODD[1:]] + [('new"one', "m")]
    second = cache.label_rows(second_rows)
    assert second.rendered == render_label_rows(["user", "model"], second_rows)
    assert all(again is before
               for again, before in zip(second.rendered[:-1], first.rendered[1:], strict=True))
    assert len(cache) == len(second_rows)
    assert cache.label_rows([]).rendered == [] and len(cache) == 0


def test_cached_label_rows_give_the_same_exposition() -> None:
    cache = LabelCache(["user", "model"])
    rows = [(user, "m") for user in ODD]

    class Cached:
        def collect(self) -> Iterator[Metric]:
            labels = cache.label_rows(rows)
            yield RowFamily("agentmeter_test_rows", "Spend by row.", "counter", labels,
                            [0.5 + i for i in range(len(rows))])
            yield RowFamily("agentmeter_test_kinds", "Tokens by kind.", "counter",
                            labels.expand("token_type", ["input", "output"]),
                            list(range(2 * len(rows))))

    registry = CollectorRegistry()
    registry.register(Cached())
    for _ in range(2):  # the second scrape renders from the cache
        body, _ = render(registry, "")
        assert _parsed(parse_text(body.decode("utf-8"))) == \
            _parsed(parse_text(generate_latest(registry).decode("utf-8")))


@pytest.mark.parametrize("column", [
    [0.25, 1e-9, 999_999.5], [0.5, 2e6], [0.5, float("nan")], [float("-inf"), 0.5],
    [3, 10**20], [1, 0.5], [True, 2], [],
])
def test_every_column_is_written_like_format_value(column: list[int | float]) -> None:
    family = RowFamily("agentmeter_test_x", "X.", "gauge",
                       LabelRows(["i"], [(str(i),) for i in range(len(column))]), column)
    lines = family.render_samples().splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines] == [format_value(v) for v in column]
