"""Fixtures shared by the integration tests: the fake provider, the fake Coder API, the fake
Kubernetes API and collectors on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.kubernetes import KubernetesCollector
from exporter.settings import KubernetesSettings
from ledger.backoff import Backoff
from tests.support.fake_coder import FakeCoder
from tests.support.fake_kube_api import FakeKubeApi, fake_kube_api, wait_until
from tests.support.fake_upstream import FakeUpstream

MakeCollector = Callable[..., KubernetesCollector]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    """A fake provider on a real port; a module overrides it to change the default answer."""
    fake = FakeUpstream()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
async def coder() -> AsyncIterator[FakeCoder]:
    """The fake Coder API on a real port; a test gives it its users, groups and tokens."""
    fake = FakeCoder()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with fake_kube_api() as server:
        yield server


@pytest.fixture
def make_collector(api: FakeKubeApi, tmp_path: Path) -> Iterator[MakeCollector]:
    started: list[KubernetesCollector] = []

    def make(**overrides: Any) -> KubernetesCollector:
        settings = KubernetesSettings(
            enabled=True, kubeconfig=str(api.write_kubeconfig(tmp_path / "kubeconfig")),
            metrics_poll_seconds=0.1, **overrides)
        collector = KubernetesCollector(settings, backoff=Backoff(0.05, 0.2))
        started.append(collector)
        collector.start()
        assert collector.wait_synced(10)
        assert wait_until(lambda: api.open_watches == 2)
        return collector

    yield make
    for collector in started:
        collector.stop()
