"""agentmeter's connections name themselves in PostgreSQL's pg_stat_activity, so an operator
looking at the ledger's server can tell the gateway's key checks, its record writer, the rest of
the gateway and the exporter apart, unless the database URL names the client itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import generate_latest
from sqlalchemy.engine import make_url

from exporter.app import build_registry
from exporter.settings import ExporterSettings
from ledger.engine import libpq_url
from ledger.settings import DatabaseSettings
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway import (
    bearer,
    gateway_app,
    limiter_settings,
    openai_request,
    seed_ledger,
    settled,
)

pytestmark = pytest.mark.postgres

LIMITER_NAMES = {"agentmeter-limiter", "agentmeter-limiter-check", "agentmeter-limiter-writer"}


def client_names(url: str) -> set[str]:
    """application_name of every other connection to the URL's database."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
    return {name for (name,) in rows}


async def answer_one(aiohttp_client: Any, url: str, tmp_path: Path,
                     upstream: FakeUpstream) -> Any:
    """A gateway on `url` that has answered and recorded one request (all its connections
    open)."""
    keys = seed_ledger(url)
    client = await aiohttp_client(gateway_app(url, limiter_settings(tmp_path,
                                                                     upstream.base_url)))
    response = await client.post("/v1/chat/completions", json=openai_request(),
                                 headers=bearer(keys["alice"]))
    assert response.status == 200
    await settled(client.app)
    return client


async def test_the_limiters_connections_say_which_part_holds_them(
        aiohttp_client: Any, pg_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    await answer_one(aiohttp_client, pg_url, tmp_path, upstream)
    assert client_names(pg_url) >= LIMITER_NAMES


async def test_a_client_name_in_the_database_url_wins(
        aiohttp_client: Any, pg_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    named = make_url(pg_url).update_query_dict({"application_name": "ops-gateway"})
    url = named.render_as_string(hide_password=False)
    await answer_one(aiohttp_client, url, tmp_path, upstream)
    names = client_names(pg_url)
    assert "ops-gateway" in names
    assert not names & LIMITER_NAMES


def test_the_exporters_connection_names_the_exporter(pg_url: str) -> None:
    registry, close = build_registry(ExporterSettings(), DatabaseSettings(url=pg_url))
    try:
        assert b"agentmeter_collector_success" in generate_latest(registry)
        assert "agentmeter-exporter" in client_names(pg_url)
    finally:
        close()
