"""Fixtures of the real-agent tests: the fake provider every client calls, and a home and a
working directory of their own for each client run (`home`, with `work` beside it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.fake_agents_provider import FakeAgentsProvider


@pytest.fixture
async def fake() -> AsyncIterator[FakeAgentsProvider]:
    async with FakeAgentsProvider() as provider:
        yield provider


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    return tmp_path / "home"
