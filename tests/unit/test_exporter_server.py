"""The /metrics and /healthz server: content negotiation, compression, errors."""

from __future__ import annotations

import gc
import gzip
import threading
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.server import create_app, gc_paused, parse_listen

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


class Sample:
    def __init__(self, rows: int = 1) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("agentmeter_test_value", "A value.", labels=["user"])
        for i in range(self.rows):
            gauge.add_metric([f"user-{i}"], float(i))
        yield gauge
        yield CounterMetricFamily("agentmeter_test_events", "Events.", value=3.0)


def _registry(rows: int = 1) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(Sample(rows))
    return registry


async def test_plain_text_by_default(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = await aiohttp_client(create_app(_registry()))
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    body = await response.text()
    assert 'agentmeter_test_value{user="user-0"} 0.0' in body
    assert "agentmeter_test_events_total 3.0" in body
    assert "# EOF" not in body


@pytest.mark.parametrize("accept", [PROMETHEUS_ACCEPT, "application/openmetrics-text"])
async def test_openmetrics_when_the_scraper_asks(aiohttp_client, accept: str) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = await aiohttp_client(create_app(_registry()))
    response = await client.get("/metrics", headers={"Accept": accept})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith(
        "application/openmetrics-text; version=1.0.0")
    body = await response.text()
    assert body.endswith("# EOF\n")
    assert "# TYPE agentmeter_test_events counter" in body
    assert "agentmeter_test_events_total 3.0" in body


async def test_large_exposition_is_gzipped_when_accepted(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = await aiohttp_client(create_app(_registry(rows=500)))
    response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert 'agentmeter_test_value{user="user-499"} 499.0' in await response.text()

    plain = await client.get("/metrics", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in plain.headers
    assert 'user="user-499"' in await plain.text()
    # Compressed family by family, the page reads back exactly as the plain one.
    raw = await client.get("/metrics", headers={"Accept-Encoding": "gzip"},
                           auto_decompress=False)
    assert gzip.decompress(await raw.read()) == (await plain.text()).encode()


async def test_small_exposition_is_sent_as_it_is(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = await aiohttp_client(create_app(_registry(rows=1)))
    response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert response.status == 200
    assert "Content-Encoding" not in response.headers
    assert 'agentmeter_test_value{user="user-0"} 0.0' in await response.text()


async def test_healthz_reports_collectors(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    app = create_app(_registry(), health=lambda: {"ledger": False, "kubernetes": None})
    client: TestClient = await aiohttp_client(app)
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok",
                                     "collectors": {"ledger": False, "kubernetes": None}}


async def test_wrong_method_and_unknown_path(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = await aiohttp_client(create_app(_registry()))
    assert (await client.post("/metrics")).status == 405
    assert (await client.get("/nope")).status == 404
    index = await client.get("/")
    assert index.status == 200 and "/metrics" in await index.text()


class GcWitness:
    """Records whether the cyclic garbage collector ran during each collect()."""

    def __init__(self) -> None:
        self.enabled_during: list[bool] = []

    def collect(self) -> Iterator[Metric]:
        self.enabled_during.append(gc.isenabled())
        yield GaugeMetricFamily("agentmeter_test_value", "A value.", value=1.0)


async def test_scrape_runs_with_the_garbage_collector_paused(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    assert gc.isenabled()
    witness = GcWitness()
    registry = CollectorRegistry()
    registry.register(witness)
    client: TestClient = await aiohttp_client(create_app(registry))
    for _ in range(2):
        assert (await client.get("/metrics")).status == 200
        assert gc.isenabled()
    assert witness.enabled_during == [False, False]


def test_gc_pause_ends_with_the_last_overlapping_scrape() -> None:
    assert gc.isenabled()
    first_in, release_first = threading.Event(), threading.Event()

    def first_scrape() -> None:
        with gc_paused():
            first_in.set()
            release_first.wait(5)

    thread = threading.Thread(target=first_scrape)
    thread.start()
    assert first_in.wait(5)
    with gc_paused():
        release_first.set()
        thread.join(5)
        assert not gc.isenabled()  # the first scrape ended, this one still runs
    assert gc.isenabled()


def test_gc_pause_keeps_a_disabled_collector_disabled_and_ends_on_errors() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a scrape that fails still ends the pause")
    assert gc.isenabled()


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9787") == ("127.0.0.1", 9787)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":9787") == ("0.0.0.0", 9787)
    for bad in ("9787", "host:", "host:port", "host:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)
