"""Records a previous run left in the spool reach the ledger at start-up, exactly once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ledger.engine import create_sync_engine
from ledger.retention import save_retention_state
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord
from limiter.recording.recorder import to_entry
from limiter.recording.spool import Spool
from tests.support.gateway import gateway_app, limiter_settings, metric, query, seed_ledger


async def replayed(spool_dir: Path) -> None:
    """Wait (10 s at most) until the gateway has replayed and removed every spool file."""
    deadline = asyncio.get_running_loop().time() + 10
    while list(spool_dir.glob("*.jsonl")):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


async def test_spool_left_by_a_previous_run_is_replayed_at_start_up(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path) -> None:
    seed_ledger(ledger_url)
    alice_id = int(query(ledger_url, "SELECT id FROM users WHERE username = 'alice'")[0][0])
    at = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
    records = [UsageRecord(id=str(uuid.uuid4()), user_id=alice_id, model="gpt-test",
                           provider="openai", usage=TokenUsage(input=10, output=n),
                           created_at=at, chat="chat-s", partial=n == 2,
                           response_id=f"resp_spooled{n}" if n else None) for n in range(3)]
    spool = Spool(tmp_path / "spool")
    spool.open()
    for record in records:
        spool.append(to_entry(record))
    spool.append(to_entry(records[0]))  # a record spooled twice still counts once
    spool.close()

    registry = CollectorRegistry()
    settings = limiter_settings(tmp_path, "http://127.0.0.1:9")
    client = await aiohttp_client(gateway_app(ledger_url, settings, registry=registry,
                                              replay_interval_s=0.1))
    await replayed(tmp_path / "spool")
    rows = query(ledger_url, "SELECT id, output_tokens, cost_micros, partial FROM messages "
                             "ORDER BY output_tokens")
    assert [(r.id, r.output_tokens, r.cost_micros, bool(r.partial)) for r in rows] == [
        (records[0].id, 0, 10, False), (records[1].id, 1, 12, False),
        (records[2].id, 2, 14, True)]
    # Whose each response id is rides with its record.
    owners = query(ledger_url, "SELECT response_id, user_id FROM response_owners "
                               "ORDER BY response_id")
    assert [tuple(r) for r in owners] == [("resp_spooled1", alice_id), ("resp_spooled2", alice_id)]
    assert metric(registry, "agentmeter_limiter_spool_pending") == 0
    await client.close()


async def test_a_replayed_record_older_than_the_ledger_keeps_is_refused_and_counted(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path) -> None:
    """After a prune, a spooled record from before the retention edge adds nothing to the
    ledger (it may have been counted before its month was pruned) and shows on /metrics."""
    seed_ledger(ledger_url)
    alice_id = int(query(ledger_url, "SELECT id FROM users WHERE username = 'alice'")[0][0])
    edge = datetime(2026, 3, 1, tzinfo=UTC)
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.begin() as conn:  # what a prune up to `edge` leaves behind
        save_retention_state(conn, kept_since=edge)
    engine.dispose()
    old, kept = (UsageRecord(id=str(uuid.uuid4()), user_id=alice_id, model="gpt-test",
                             provider="openai", usage=TokenUsage(input=10, output=1),
                             created_at=at) for at in (edge.replace(month=2), edge))
    spool = Spool(tmp_path / "spool")
    spool.open()
    spool.append(to_entry(old))
    spool.append(to_entry(kept))
    spool.close()

    registry = CollectorRegistry()
    settings = limiter_settings(tmp_path, "http://127.0.0.1:9")
    client = await aiohttp_client(gateway_app(ledger_url, settings, registry=registry,
                                              replay_interval_s=0.1))
    await replayed(tmp_path / "spool")
    assert [r.id for r in query(ledger_url, "SELECT id FROM messages")] == [kept.id]
    assert int(query(ledger_url, "SELECT sum(messages) FROM usage_totals")[0][0]) == 1
    assert metric(registry, "agentmeter_limiter_records_refused_total") == 1
    await client.close()
