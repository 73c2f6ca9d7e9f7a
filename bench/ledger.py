"""The limit check at scale: effective limit + spend in the current (monthly) period.

    .venv/bin/python -m bench.ledger [--messages 10000000] [--small-messages 1000000]
                                     [--samples 5000] [--reseed]
    .venv/bin/python -m bench.ledger --year [--messages 30000000] [--small-messages 3000000]
                                     [--runs 20] [--conversion]

`--year` spreads the messages over 400 days and measures every read an operator makes plus
pruning a month (bench/ledger_year.py); `--conversion` also times migration 0006 converting a
one-table ledger of --small-messages messages into monthly partitions.

Seeds (with COPY and server-side generation, see bench/seed_ledger.py) 10,000 users in 200
groups, 50 models with each user on 3 of them, each user active on 3 days in 8 of the history
(the last 90 days, or 400 with `--year`), the messages dealt over those days, once per size into
`am_bench_<N>m` (`am_bench_400d_<N>`) on the shared PostgreSQL (kept for later runs and for
bench/exporter.py). Then times the check as the limiter runs it — `ledger.spend.check_key`
(one statement: key, user, limits, groups, period spend) and `ledger.spend.limit_status` — for
random users, one at a time on one connection, and prints p50/p99 at both sizes.

Targets: p99 <= 2 ms, and the figure at 10M messages within 1.5x of the one at 1M.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select

from bench.seed_ledger import add_dataset_arguments, dataset_ledgers
from ledger.engine import create_sync_engine
from ledger.keys import hash_key
from ledger.schema import api_keys, users
from ledger.settings import DatabaseSettings
from ledger.spend import check_key, limit_status

TARGET_P99_MS = 2.0
TARGET_RATIO = 1.5
KEY_PREFIX = "am-bench-"


def _ensure_keys(conn: Connection) -> list[tuple[int, str]]:
    """One key per user (secret derived from the id, so reruns reuse them)."""
    user_ids = [row.id for row in conn.execute(select(users.c.id).order_by(users.c.id))]
    have = {row.user_id for row in conn.execute(select(api_keys.c.user_id))}
    missing = [u for u in user_ids if u not in have]
    now = datetime.now(UTC)
    if missing:
        conn.execute(insert(api_keys), [
            {"id": f"key_bench{u}", "user_id": u, "key_hash": hash_key(f"{KEY_PREFIX}{u}"),
             "prefix": KEY_PREFIX[:8], "created_at": now} for u in missing])
        conn.commit()
    return [(u, f"{KEY_PREFIX}{u}") for u in user_ids]


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(median, p99) of `samples`."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def time_calls(fn: Callable[[], object], samples: int) -> list[float]:
    """How long each of `samples` calls of `fn` took, in ms."""
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        fn()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def measure(url: str, samples: int) -> dict[str, tuple[float, float]]:
    engine = create_sync_engine(DatabaseSettings(url=url))
    rng = random.Random(7)
    now = datetime.now(UTC)
    try:
        with engine.connect() as setup:
            keys = _ensure_keys(setup)
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            for user_id, secret in keys[:200]:  # warm the statement cache and the pages
                check_key(conn, secret, now)
                limit_status(conn, user_id, now)
            by_key = time_calls(lambda: check_key(conn, rng.choice(keys)[1], now), samples)
            by_user = time_calls(lambda: limit_status(conn, rng.choice(keys)[0], now), samples)
    finally:
        engine.dispose()
    return {"check_key": percentiles(by_key), "limit_status": percentiles(by_user)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser)
    parser.add_argument("--samples", type=int, default=5_000)
    parser.add_argument("--year", action="store_true", help="400 days of history, all figures")
    parser.add_argument("--runs", type=int, default=20, help="--year: timings per read")
    parser.add_argument("--conversion", action="store_true",
                        help="--year: also time migration 0006 per million messages")
    args = parser.parse_args()
    if args.year:
        _year(args)
        return
    results = {}
    for messages, url in dataset_ledgers(args).items():
        results[messages] = measure(url, args.samples)
        for what, (p50, p99) in results[messages].items():
            print(f"{messages:>12,} messages  {what:<13} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms",
                  flush=True)
    big, small = results[args.messages]["check_key"], results[args.small_messages]["check_key"]
    ratio = big[1] / small[1]
    print(f"targets (check_key): p99 <= {TARGET_P99_MS} ms: "
          f"{'met' if big[1] <= TARGET_P99_MS else 'MISSED'} ({big[1]:.3f} ms); "
          f"{args.messages:,} vs {args.small_messages:,} messages p99: {ratio:.2f}x "
          f"(<= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'MISSED'})")


def _year(args: argparse.Namespace) -> None:
    from bench import ledger_year

    if args.days == 90:
        args.days = 400
    if "--messages" not in sys.argv:
        args.messages, args.small_messages = 30_000_000, 3_000_000
    if args.conversion:
        per_million = ledger_year.conversion_seconds_per_million(args.admin_url,
                                                                 args.small_messages)
        print(f"migration 0006: {per_million:.1f} s per million messages "
              f"(measured on {args.small_messages:,})", flush=True)
    urls = dataset_ledgers(args)
    reads = ledger_year.year_reads(urls, args.samples, args.runs)
    prunes = {messages: ledger_year.pruned_copy(url) for messages, url in urls.items()}
    ledger_year.report(reads, prunes)
    print(f"PostgreSQL data directory: {ledger_year.data_mount(next(iter(urls.values())))}")


if __name__ == "__main__":
    main()
