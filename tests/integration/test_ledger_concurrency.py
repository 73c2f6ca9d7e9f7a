"""50 concurrent recordings for one user on PostgreSQL: the rollups equal the messages."""

import threading
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from ledger.engine import create_sync_engine
from ledger.schema import chat_daily_usage, daily_usage, messages, period_spend, usage_totals
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord, record_usage_batch
from ledger.users import get_user
from tests.support.ledger_seed import record, seed_policy

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def test_concurrent_records_keep_rollups_exact(pg_url: str) -> None:
    engine = create_sync_engine(DatabaseSettings(url=pg_url, pool_size=25))
    seed_policy(engine)
    ids = [uuid.uuid4().hex for _ in range(50)]
    ids[49] = ids[0]  # one id repeated: counted once
    barrier = threading.Barrier(50)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            record(engine, "alice", "claude-sonnet-4-5",
                   TokenUsage(input=1000 + i, output=333 + i, cache_read=7 * i),
                   NOW, chat=f"chat-{i % 5}", record_id=ids[i])
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        count, cost = conn.execute(select(func.count(), func.sum(messages.c.cost_micros))).one()
        assert count == 49
        day = conn.execute(select(daily_usage.c.messages, daily_usage.c.cost_micros,
                                  daily_usage.c.input_tokens)).one()
        assert day.messages == 49 and day.cost_micros == cost
        assert day.input_tokens == conn.execute(select(func.sum(messages.c.input_tokens))
                                                ).scalar_one()
        total = conn.execute(select(usage_totals.c.messages, usage_totals.c.cost_micros)).one()
        assert (total.messages, total.cost_micros) == (49, cost)
    engine.dispose()


def test_a_batch_equals_the_same_records_one_by_one(ledger_url: str) -> None:
    """Group commit: a batch (with a repeated id and a known id) leaves the same ledger."""
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    seed_policy(engine)
    with engine.connect() as conn:
        alice = get_user(conn, "alice").id
        bob = get_user(conn, "bob").id
    known = record(engine, "bob", "gpt-5", TokenUsage(input=5), NOW, record_id="known",
                   provider="openai")
    assert known.inserted
    batch = [UsageRecord(id=f"r{i}", user_id=alice if i % 2 else bob,
                         model="claude-sonnet-4-5-20250929" if i % 3 else "gpt-5",
                         provider="anthropic", usage=TokenUsage(input=100 * i, output=7 * i),
                         created_at=NOW.replace(day=1 + i % 28), chat=f"c{i % 4}")
             for i in range(40)]
    batch.append(batch[3])  # repeated within the batch
    batch.append(UsageRecord(id="known", user_id=bob, model="gpt-5", provider="openai",
                             usage=TokenUsage(input=5), created_at=NOW))
    with engine.begin() as conn:
        results = record_usage_batch(conn, batch)
    assert [r.inserted for r in results] == [True] * 40 + [False, False]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(messages)).scalar_one() == 41
        by_message = conn.execute(select(func.sum(messages.c.cost_micros),
                                         func.sum(messages.c.output_tokens))).one()
        by_day = conn.execute(select(func.sum(daily_usage.c.cost_micros),
                                     func.sum(daily_usage.c.output_tokens))).one()
        by_total = conn.execute(select(func.sum(usage_totals.c.cost_micros),
                                       func.sum(usage_totals.c.output_tokens))).one()
        assert tuple(by_message) == tuple(by_day) == tuple(by_total)
        month = conn.execute(select(func.sum(period_spend.c.cost_micros))
                             .where(period_spend.c.period == "month")).scalar_one()
        assert month == by_message[0]
        chat_messages = conn.execute(select(func.sum(chat_daily_usage.c.messages))).scalar_one()
        assert chat_messages == 40
    engine.dispose()
