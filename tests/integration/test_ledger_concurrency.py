"""50 concurrent recordings for one user on PostgreSQL: the rollups equal the messages."""

import threading
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from ledger.engine import create_sync_engine
from ledger.schema import daily_usage, messages, usage_totals
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
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
