"""The write-ahead journal: records of answered requests survive the limiter being killed before
they were committed, and a healthy limiter keeps its journal empty."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord
from limiter.http.app import JOURNAL_DIR
from limiter.recording.journal import Journal
from limiter.recording.recorder import to_entry
from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.gateway import (
    bearer,
    gateway_app,
    limiter_settings,
    message_count,
    openai_request,
    query,
    seed_ledger,
    settled,
)

CHAT = "/v1/chat/completions"


async def _until(condition: Any, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_dead_limiters_journal_is_replayed_once(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path,
        upstream: FakeUpstream) -> None:
    seed_ledger(ledger_url)
    alice = int(query(ledger_url, "SELECT id FROM users WHERE username = 'alice'")[0][0])
    # What a SIGKILLed limiter leaves behind: records journaled, never committed.
    dead = Journal(tmp_path / "spool" / JOURNAL_DIR)
    dead.open()
    records = [UsageRecord(id=str(uuid.uuid4()), user_id=alice, model="gpt-test",
                           provider="openai", usage=TokenUsage(input=10, output=5),
                           created_at=datetime.now(UTC), chat=f"chat-{n}") for n in range(3)]
    dead.append_unsynced([to_entry(r) for r in records])
    dead.append_unsynced([to_entry(records[0])])  # journaled twice: still one message
    dead.close()

    app = gateway_app(ledger_url, limiter_settings(tmp_path, upstream.base_url),
                      registry=CollectorRegistry(), replay_interval_s=0.1)
    await aiohttp_client(app)
    await _until(lambda: message_count(ledger_url) == 3)
    await _until(lambda: not list((tmp_path / "spool" / JOURNAL_DIR).glob("*.jsonl")))
    assert message_count(ledger_url) == 3
    assert int(query(ledger_url, "SELECT sum(cost_micros) FROM messages")[0][0]) == 3 * 20


async def test_a_healthy_limiter_empties_its_journal(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path,
        upstream: FakeUpstream) -> None:
    keys = seed_ledger(ledger_url)
    app = gateway_app(ledger_url, limiter_settings(tmp_path, upstream.base_url),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    for _ in range(5):
        resp = await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
        assert resp.status == 200
        await resp.read()
    await settled(app)

    assert message_count(ledger_url) == 5
    journals = list((tmp_path / "spool" / JOURNAL_DIR).glob("*.jsonl"))
    assert journals, "records were not journaled"
    assert all(path.stat().st_size == 0 for path in journals)
    assert not list((tmp_path / "spool").glob("*.jsonl"))  # nothing spooled: the ledger took it


def journal_entries(tmp_path: Path) -> list[dict[str, Any]]:
    entries = []
    for path in sorted((tmp_path / "spool" / JOURNAL_DIR).glob("*.jsonl")):
        entries += [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return entries


async def test_a_stream_is_journaled_before_the_client_has_its_end(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path,
        upstream: FakeUpstream) -> None:
    """A SIGKILL after the client got the whole answer cannot lose its record: the record
    reaches the journal (the page cache) before the chunk with the terminal event is relayed."""
    keys = seed_ledger(ledger_url)
    answer = Answer(usage=TokenUsage(input=30, output=7), pause_before_end=True)
    upstream.queue(answer)
    # The writer lingers: whatever is in the journal now was put there by the request itself.
    app = gateway_app(ledger_url, limiter_settings(tmp_path, upstream.base_url,
                                                   record_linger_seconds=3.0),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    resp = await client.post(CHAT, json=openai_request(stream=True),
                             headers=bearer(keys["alice"]))
    assert resp.status == 200
    async for line in resp.content:
        if line.strip() == b"data: [DONE]":
            break
    else:
        raise AssertionError("the stream ended without its terminal event")

    # The upstream has not ended the response yet, so neither has the limiter.
    assert not resp.content.at_eof()
    (entry,) = journal_entries(tmp_path)
    assert entry["usage"]["input"] == 30 and entry["usage"]["output"] == 7
    assert entry["partial"] is False
    assert message_count(ledger_url) == 0

    answer.resume.set()
    await resp.read()
    await settled(app)
    assert message_count(ledger_url) == 1
    assert journal_entries(tmp_path) == []


async def test_a_plain_answer_is_journaled_before_it_is_sent(
        aiohttp_client: Any, ledger_url: str, tmp_path: Path,
        upstream: FakeUpstream) -> None:
    keys = seed_ledger(ledger_url)
    upstream.queue(Answer(usage=TokenUsage(input=11, output=4)))
    app = gateway_app(ledger_url, limiter_settings(tmp_path, upstream.base_url,
                                                   record_linger_seconds=3.0),
                      registry=CollectorRegistry())
    client = await aiohttp_client(app)
    resp = await client.post(CHAT, json=openai_request(), headers=bearer(keys["alice"]))
    assert resp.status == 200
    await resp.read()
    (entry,) = journal_entries(tmp_path)
    assert (entry["usage"]["input"], entry["usage"]["output"]) == (11, 4)
    assert message_count(ledger_url) == 0  # the lingering writer has not committed it
    await settled(app)
    assert message_count(ledger_url) == 1
