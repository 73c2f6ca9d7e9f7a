"""Wiring of the exporter's Coder sync timer."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry

from agentmeter.coder_sync_job import coder_sync_jobs
from coder.settings import CoderSettings
from ledger.settings import DatabaseSettings


def test_no_timer_unless_sync_seconds_is_set() -> None:
    settings = CoderSettings(url="https://coder.example.com", token="t")
    assert coder_sync_jobs(settings, DatabaseSettings(), CollectorRegistry()) == []


@pytest.mark.parametrize("missing", ["url", "token"])
def test_a_timer_without_url_or_token_is_refused_at_start(missing: str) -> None:
    given = {"url": "https://coder.example.com", "token": "t", "sync_seconds": 60.0}
    given[missing] = ""
    with pytest.raises(ValueError, match=re.escape(
            "coder.sync_seconds is set but coder.url or coder.token is not")):
        coder_sync_jobs(CoderSettings(**given), DatabaseSettings(), CollectorRegistry())
