"""A year of history: what 400 days of messages cost the reads an operator makes, and pruning.

Run through `python -m bench.ledger --year` (which seeds the two ledgers). For each ledger:
the limit check (bench.ledger's figures), a scrape of the exporter, the cost table for the
last 30 days and for the whole history (page 1, a page in the middle, a search) and one user's
detail with the per-chat breakdown, in rounds alternating between the two ledgers; then
pruning the oldest months one at a time while a writer records 200 messages a second (its p99
before and during), and table sizes before and after. Pruning works on a copy of the ledger
(CREATE DATABASE ... TEMPLATE), so the seeded ledger is kept for the next run.

Targets (issue 23): limit check p99 <= 2 ms; cost table <= 300 ms (30 days) and <= 1 s (whole
history); user detail <= 200 ms; pruning adds <= 5 ms to recording p99; every read within 1.2x
of its figure on the small ledger.
"""

from __future__ import annotations

import multiprocessing
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection as PipeEnd
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

from prometheus_client import generate_latest
from sqlalchemy import Connection, Engine, select, text

from bench.ledger import measure as limit_check
from bench.ledger import percentiles, time_calls
from exporter.app import build_registry
from exporter.settings import ExporterSettings
from ledger.engine import create_sync_engine
from ledger.partitions import attached_partitions
from ledger.prune import maintain
from ledger.reports import cost_table, user_detail
from ledger.schema import users
from ledger.settings import DatabaseSettings, LedgerSettings
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord, record_usage_batch

Figures = dict[str, tuple[float, float]]  # name -> (median ms, p99 or max ms)
TARGETS_MS = {"limit check": 2.0, "cost table 30d": 300.0, "cost table all": 1000.0,
              "user detail": 200.0}
RECORDS_PER_SECOND = 200
# Months pruned one after the other, for enough records timed during pruning.
PRUNED_MONTHS = 6
SIZE_TABLES = ("messages", "daily_usage", "chat_daily_usage", "period_spend", "usage_totals")


def _read_timings(engine: Engine, url: str, runs: int) -> dict[str, list[float]]:
    """One round of every read on one ledger, `runs` timings each (ms)."""
    now = datetime.now(UTC)
    month, year = now - timedelta(days=30), now - timedelta(days=400)
    timings: dict[str, list[float]] = {}
    with engine.connect() as conn:
        names = list(conn.execute(select(users.c.username)).scalars())
        middle = max(1, len(names) // 50 // 2)
        rng = random.Random(3)
        for label, start in (("30d", month), ("all", year)):
            cost_table(conn, start, now)  # warm
            timings[f"cost table {label}"] = time_calls(lambda s=start: cost_table(conn, s, now),
                                                    runs)
            timings[f"cost table {label} page {middle}"] = time_calls(
                lambda s=start: cost_table(conn, s, now, page=middle), runs)
            timings[f"cost table {label} search"] = time_calls(
                lambda s=start: cost_table(conn, s, now, search="user01"), runs)
            timings[f"user detail {label}"] = time_calls(
                lambda s=start: user_detail(conn, rng.choice(names), s, now, now), runs * 5)
    registry, close = build_registry(ExporterSettings(), DatabaseSettings(url=url))
    try:
        generate_latest(registry)
        timings["scrape"] = time_calls(lambda: generate_latest(registry), max(1, runs // 4))
    finally:
        close()
    return timings


def year_reads(urls: dict[int, str], samples: int, runs: int, rounds: int = 4
               ) -> dict[int, Figures]:
    """Every read's median and p99 on each ledger (message count -> URL). The reads run in
    `rounds` rounds that alternate between the ledgers, so a host that slows down for a while
    slows both sizes alike and their ratio holds."""
    engines = {messages: create_sync_engine(DatabaseSettings(url=url))
               for messages, url in urls.items()}
    timings: dict[int, dict[str, list[float]]] = {messages: {} for messages in urls}
    try:
        checks = {messages: limit_check(url, samples) for messages, url in urls.items()}
        order = sorted(urls)
        for round_ in range(rounds):
            for messages in order if round_ % 2 == 0 else order[::-1]:
                got = _read_timings(engines[messages], urls[messages],
                                    max(1, runs // rounds))
                for name, values in got.items():
                    timings[messages].setdefault(name, []).extend(values)
    finally:
        for engine in engines.values():
            engine.dispose()
    return {messages: {"limit check": checks[messages]["check_key"],
                       **{name: percentiles(values) for name, values in by_name.items()}}
            for messages, by_name in timings.items()}


def _sizes(conn: Connection) -> dict[str, int]:
    """Bytes with indexes; a partitioned table's are summed over its partitions."""
    return {table: int(conn.execute(text(
        "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) "
        "FROM pg_partition_tree(to_regclass(:t))), pg_total_relation_size(to_regclass(:t)))"),
        {"t": table}).scalar_one()) for table in SIZE_TABLES}


def _record(url: str, user_ids: list[int], stop: EventType, out: PipeEnd) -> None:
    """Record RECORDS_PER_SECOND messages a second, one transaction each, until `stop`; send
    back (when, ms) for each. Runs in a process of its own, as the limiter's writer does: in
    the process that prunes, it would wait on that process's GIL, not on the database."""
    engine = create_sync_engine(DatabaseSettings(url=url))
    rng = random.Random(11)
    interval = 1 / RECORDS_PER_SECOND
    timings: list[tuple[float, float]] = []
    next_at = time.perf_counter()
    try:
        while not stop.is_set():
            record = UsageRecord(uuid.uuid4().hex, rng.choice(user_ids), "model-01",
                                 "anthropic", TokenUsage(input=1000, output=100),
                                 datetime.now(UTC), chat=None)
            started = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
            with engine.begin() as conn:
                record_usage_batch(conn, [record])
            timings.append((started, (time.perf_counter() - started) * 1000))
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
    finally:
        engine.dispose()
        out.send(timings)


def _prune_months(engine: Engine, url: str, warmup_s: float) -> dict[str, float]:
    """Prune the oldest PRUNED_MONTHS months, one maintenance run each, while recording;
    recording p99 before and during, in ms."""
    with engine.connect() as conn:
        user_ids = list(conn.execute(select(users.c.id)).scalars())
        months = attached_partitions(conn)[:PRUNED_MONTHS]
        before_sizes = _sizes(conn)
        rows = sum(int(conn.execute(text(f'SELECT count(*) FROM "{month.name}"')).scalar_one())
                   for month in months)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receiving, sending = context.Pipe(duplex=False)
    recorder = context.Process(target=_record, daemon=True,
                               args=(url, user_ids, stop, sending))
    recorder.start()
    time.sleep(warmup_s)
    windows, removed = [], 0
    for month in months:
        days = (today - month.end).days  # the retention edge falls on the month's end
        started = time.perf_counter()
        result = maintain(engine, LedgerSettings(message_retention_days=days), datetime.now(UTC))
        windows.append((started, time.perf_counter()))
        assert result is not None
        removed += result.messages
        time.sleep(1.0)
    stop.set()
    timings: list[tuple[float, float]] = receiving.recv()
    recorder.join()
    assert removed == rows, (removed, rows)
    before = [ms for at, ms in timings if at < windows[0][0]]
    during = [ms for at, ms in timings if any(start <= at <= end for start, end in windows)]
    with engine.connect() as conn:
        after_sizes = _sizes(conn)
    (p50_before, p99_before), (p50_during, p99_during) = percentiles(before), percentiles(during)
    figures = {"pruned months": float(len(months)), "pruned rows": float(rows),
               "prune s (slowest month)": max(end - start for start, end in windows),
               "record p50 before": p50_before, "record p99 before": p99_before,
               "record max before": max(before), "records before": float(len(before)),
               "record p50 during": p50_during, "record p99 during": p99_during,
               "record max during": max(during), "records during": float(len(during))}
    for table in SIZE_TABLES:
        figures[f"MB {table} before"] = before_sizes[table] / 2**20
        figures[f"MB {table} after"] = after_sizes[table] / 2**20
    return figures


def pruned_copy(url: str, warmup_s: float = 10.0) -> dict[str, float]:
    """The pruning figures, measured on a copy of the ledger at `url` (dropped afterwards)."""
    import psycopg

    base, _, name = url.rpartition("/")
    copy = f"{name}_prune"
    admin = f"{base}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
        # FILE_COPY, not PostgreSQL 15's default WAL_LOG: gigabytes of WAL would keep the
        # checkpointer writing while recording is timed. The checkpoint after it writes out
        # what the copy left dirty.
        conn.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}" STRATEGY FILE_COPY')
        conn.execute("CHECKPOINT")
    engine = create_sync_engine(DatabaseSettings(url=f"{base}/{copy}"))
    try:
        return _prune_months(engine, f"{base}/{copy}", warmup_s)
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')


def data_mount(url: str) -> str:
    """The mount options of the filesystem holding PostgreSQL's data directory, when the server
    runs on this machine: with online discard (`discard`) a dropped month's TRIM delays every
    WAL flush meanwhile, which is what pruning costs recording here (see the README)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    directory = Path(str(row[0]) if row else "")
    if not directory.exists():
        return "unknown (the server is not on this machine)"
    best = ("", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        _, point, kind, options, *_ = line.split()
        if directory.is_relative_to(point) and len(point) > len(best[0]):
            best = (point, f"{kind} {options} on {point}")
    return best[1] or "unknown"


def report(reads_by_size: dict[int, Figures], prunes: dict[int, dict[str, float]]) -> None:
    results = {messages: (reads, prunes[messages]) for messages, reads in reads_by_size.items()}
    small, big = min(results), max(results)
    for messages, (reads, prune) in sorted(results.items()):
        print(f"--- {messages:,} messages")
        for name, (p50, p99) in reads.items():
            print(f"{name:<28} median {p50:8.2f} ms   p99/max {p99:8.2f} ms", flush=True)
        for name, value in prune.items():
            print(f"{name:<28} {value:12,.2f}")
    print("--- targets")
    reads_big, prune_big = results[big]
    for name, target in TARGETS_MS.items():
        worst = max(p99 for label, (_, p99) in reads_big.items() if label.startswith(name))
        print(f"{name:<28} worst {worst:8.2f} ms <= {target:g} ms: "
              f"{'met' if worst <= target else 'MISSED'}")
    added = prune_big["record p99 during"] - prune_big["record p99 before"]
    print(f"{'pruning adds to record p99':<28} {added:8.2f} ms <= 5 ms: "
          f"{'met' if added <= 5 else 'MISSED'}")
    reads_small = results[small][0]
    for name, (p50, _) in reads_big.items():
        ratio = p50 / reads_small[name][0]
        print(f"{name:<28} median {big:,} vs {small:,}: {ratio:5.2f}x "
              f"{'met' if ratio <= 1.2 else 'MISSED'} (<= 1.2x)")


def conversion_seconds_per_million(admin_url: str, messages: int) -> float:
    """Seed a ledger at revision 0003 (one table), time its migration to partitions."""
    import psycopg

    from bench.seed_ledger import database_url, recreate_database, seed
    from ledger.migrate import upgrade

    name = f"am_bench_convert_{messages}"
    url = database_url(admin_url, name)
    recreate_database(admin_url, name)
    try:
        seed(url, messages=messages, days=400, revision="0003", log=False)
        started = time.perf_counter()
        upgrade(url)
        seconds = time.perf_counter() - started
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return seconds / (messages / 1_000_000)
