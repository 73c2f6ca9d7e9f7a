"""A large PostgreSQL ledger for benchmarks: users, models, limits, messages and their rollups.

Reference data (users, groups, limits, models) goes in with COPY; the messages are generated
inside PostgreSQL (one INSERT ... SELECT over generate_series: ten million rows from Python would
take longer than the benchmark itself), drawing their token counts from a table of usage shapes
whose costs were computed by the ledger's own `price_message`. The daily, lifetime, per-period and
per-chat rollups are then aggregated from the messages, so they agree with them exactly, as
`record_usage` would have left them, and written in time order, as a ledger fills day by day
(a user's rows over a year lie on as many pages as days, not side by side).

The activity is fixed and the messages fill it: each user works with agents on 3 days in 8 of
the history (spread over it), on one of their 3 models at a time (switching every 10 working
days), in chats that last two working days. The messages are dealt round-robin over those
(user, day) cells, so a ledger with ten times the messages has the same users, days, models and
chats, and the same rollup rows, with ten times the messages in each: the comparison the
benchmarks make between two sizes. (Every user busy every day on every model would instead grow
the rollups with the messages.)

    python -m bench.seed_ledger postgresql://postgres@127.0.0.1:5432/am_bench --messages 1000000
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg

from ledger.engine import create_sync_engine
from ledger.migrate import upgrade
from ledger.partitions import create_partitions, is_partitioned, month_of, months_between
from ledger.price_versions import sheet_to_json
from ledger.pricing import PriceSheet, Pricing, price_message
from ledger.settings import DatabaseSettings
from ledger.tokens import TOKEN_KINDS, TokenUsage

SHAPES_PER_MODEL = 64
# A user is active on ACTIVE_SHARE of the history's days; a chat lasts CHAT_DAYS active days.
ACTIVE_SHARE = 3 / 8
CHAT_DAYS = 2
# The models a user switches between, and after how many active days.
MODEL_DAYS = 10
GROUPS = 200
# Models without any pricing and one with a missing kind, so the pricing-gap figures are real.
UNPRICED_MODELS = 2


def _copy(cur: psycopg.Cursor, table: str, columns: tuple[str, ...],
          rows: Sequence[tuple[object, ...]]) -> None:
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(r"\N" if v is None else str(v) for v in row))
        buffer.write("\n")
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write(buffer.getvalue())


def _pricing(index: int, models: int) -> Pricing | None:
    if index >= models - UNPRICED_MODELS:
        return None
    base = 250_000 * (1 + index % 12)  # 0.25 .. 3 USD per 1M input tokens
    return Pricing(input=base, output=base * 5, cache_read=base // 10,
                   cache_write=base * 5 // 4,
                   cache_write_1h=None if index == 0 else base * 2)


def active_days(days: int) -> int:
    """The days of a `days`-day history each user is active on."""
    return max(1, int(days * ACTIVE_SHARE))


def chats_per_user(days: int) -> int:
    return -(-active_days(days) // CHAT_DAYS)


def _reference_data(cur: psycopg.Cursor, users: int, models: int, chats: int,
                    now: datetime) -> None:
    stamp = now.isoformat()
    cur.execute("INSERT INTO limit_config (id, enabled, period, default_limit_micros, "
                "group_policy, updated_at) VALUES (1, true, 'month', 50000000, 'lowest', %s)",
                (now,))
    _copy(cur, "users", ("id", "username", "name", "email", "created_at"),
          [(u, f"user{u:05d}", f"User {u}", f"user{u}@example.com", stamp)
           for u in range(1, users + 1)])
    _copy(cur, "groups", ("id", "name", "created_at"),
          [(g, f"group{g:03d}", stamp) for g in range(1, GROUPS + 1)])
    # Three groups in four have a limit, so resolution sees limited and unlimited groups.
    _copy(cur, "group_limits", ("group_id", "limit_micros"),
          [(g, 10_000_000 * (1 + g % 50)) for g in range(1, GROUPS + 1) if g % 4])
    # Every user is in one group, every other user in a second one.
    _copy(cur, "group_members", ("group_id", "user_id"),
          [(1 + u % GROUPS, u) for u in range(1, users + 1)]
          + [(1 + (u * 7 + 3) % GROUPS, u) for u in range(1, users + 1)
             if u % 2 == 0 and (u * 7 + 3) % GROUPS != u % GROUPS])
    _copy(cur, "user_limits", ("user_id", "limit_micros"),
          [(u, None if u % 20 == 0 else 25_000_000 * (1 + u % 8))
           for u in range(1, users + 1) if u % 10 == 0])
    _copy(cur, "models", ("id", "name", "provider", "enabled", "declared", "seen_in_traffic",
                          "max_output_tokens", "created_at"),
          [(m + 1, f"model-{m:02d}", "anthropic" if m % 2 else "openai", "true", "true",
            "false", 64000, stamp) for m in range(models)])
    _copy(cur, "model_prices", ("model_id", "effective_from", "source", "source_detail",
                                "prices", "recorded_at"),
          [(m + 1, stamp, "policy", "bench", json.dumps(sheet_to_json(PriceSheet.flat(p))),
            stamp) for m in range(models) if (p := _pricing(m, models)) is not None])
    _copy(cur, "chats", ("id", "user_id", "external_id", "created_at"),
          [((u - 1) * chats + c + 1, u, f"chat-{c}", stamp)
           for u in range(1, users + 1) for c in range(chats)])


def _unpriced_kinds(cur: psycopg.Cursor, models: int) -> None:
    """Per model, which token kinds its prices leave unpriced (by the ledger's own rule): the
    rollups' unpriced token sums count those."""
    kinds = [k.value for k in TOKEN_KINDS]
    cur.execute("CREATE TEMP TABLE bench_unpriced_kinds (model_id int PRIMARY KEY, "
                + ", ".join(f"{kind} boolean" for kind in kinds) + ")")
    rows = []
    for m in range(models):
        pricing = _pricing(m, models)
        sheet = None if pricing is None else PriceSheet.flat(pricing)
        rows.append((m + 1, *(str(price_message(sheet, TokenUsage(**{k.value: 1}))
                                  .unpriced.get(k) > 0).lower() for k in TOKEN_KINDS)))
    _copy(cur, "bench_unpriced_kinds", ("model_id", *kinds), rows)


def _shapes(cur: psycopg.Cursor, models: int) -> None:
    """Token counts per (model, shape) priced by the ledger's own rule."""
    rng = random.Random(42)
    cur.execute("CREATE TEMP TABLE bench_shapes (model_id int, shape int, input bigint, "
                "output bigint, cache_read bigint, cache_write bigint, cache_write_1h bigint, "
                "unpriced bigint, cost bigint, PRIMARY KEY (model_id, shape))")
    rows = []
    for m in range(models):
        pricing = _pricing(m, models)
        for shape in range(SHAPES_PER_MODEL):
            usage = TokenUsage(input=rng.randint(10, 20_000), output=rng.randint(1, 4_000),
                               cache_read=rng.choice((0, rng.randint(0, 100_000))),
                               cache_write=rng.choice((0, 0, rng.randint(0, 20_000))),
                               cache_write_1h=rng.choice((0, 0, 0, rng.randint(0, 5_000))))
            priced = price_message(None if pricing is None else PriceSheet.flat(pricing),
                                   usage)
            rows.append((m + 1, shape, *(usage.get(k) for k in TOKEN_KINDS),
                         priced.unpriced.total, priced.cost_micros))
    _copy(cur, "bench_shapes", ("model_id", "shape", "input", "output", "cache_read",
                                "cache_write", "cache_write_1h", "unpriced", "cost"), rows)


# Message g goes to cell g % cells: user 1 + cell % users on their active day number
# cell / users, which is `back` days before today (a user's active days are spread evenly over
# the history, shifted per user). k, the message's rank in its cell, puts one in ten outside any
# chat. Today's messages fall before `now`.
_MESSAGES = """
INSERT INTO messages (id, user_id, chat_id, model_id, provider, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, unpriced_tokens, cost_micros,
    partial, created_at)
SELECT 'm' || g.g, g.u, g.chat, s.model_id, CASE WHEN s.model_id %% 2 = 1 THEN 'openai'
       ELSE 'anthropic' END,
       s.input, s.output, s.cache_read, s.cache_write, s.cache_write_1h, s.unpriced, s.cost,
       false,
       %(today)s - make_interval(days => g.back::int) + make_interval(secs =>
           ((g.g * 2654435761) %% CASE WHEN g.back = 0 THEN %(today_secs)s ELSE 86400 END))
FROM (
    SELECT g, c.u, c.i * %(days)s / %(active)s + c.u %% (%(days)s / %(active)s) AS back,
           (((c.u - 1) * 7 + ((c.i / %(model_days)s) %% %(per_user)s) * 13) %% %(models)s) + 1
               AS model_id,
           CASE WHEN (g / %(cells)s) %% 10 <> 9
                THEN (c.u - 1) * %(chats)s + c.i / %(chat_days)s + 1
           END AS chat,
           g %% %(shapes)s AS shape
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g,
         LATERAL (SELECT 1 + (g %% %(cells)s) %% %(users)s AS u,
                         (g %% %(cells)s) / %(users)s AS i) AS c
) AS g
JOIN bench_shapes s ON s.model_id = g.model_id AND s.shape = g.shape
"""


def _sums(prefix: str = "") -> str:
    return ", ".join(f"sum(m.{c}_tokens)" if not prefix else
                     f"sum(CASE WHEN u.{c} THEN m.{c}_tokens ELSE 0 END)"
                     for c in (k.value for k in TOKEN_KINDS))


_TOKEN_COLUMNS = ", ".join(f"{k.value}_tokens" for k in TOKEN_KINDS)
_UNPRICED_COLUMNS = ", ".join(f"unpriced_{k.value}_tokens" for k in TOKEN_KINDS)
_MEASURES = ("count(*), sum(CASE WHEN m.cost_micros IS NULL THEN 1 ELSE 0 END), "
             "coalesce(sum(m.cost_micros), 0)")
_DAY = "(m.created_at AT TIME ZONE 'UTC')::date"

_ROLLUPS = [
    f"""INSERT INTO daily_usage (user_id, day, model_id, messages, unpriced_messages, cost_micros,
        {_TOKEN_COLUMNS}, {_UNPRICED_COLUMNS})
        SELECT m.user_id, {_DAY}, m.model_id, {_MEASURES}, {_sums()}, {_sums("unpriced_")}
        FROM messages m JOIN bench_unpriced_kinds u ON u.model_id = m.model_id
        GROUP BY 1, 2, 3 ORDER BY 2, 1, 3""",
    f"""INSERT INTO usage_totals (user_id, model_id, messages, unpriced_messages, cost_micros,
        {_TOKEN_COLUMNS}, {_UNPRICED_COLUMNS}, last_day)
        SELECT user_id, model_id, sum(messages), sum(unpriced_messages), sum(cost_micros),
        {", ".join(f"sum({k.value}_tokens)" for k in TOKEN_KINDS)},
        {", ".join(f"sum(unpriced_{k.value}_tokens)" for k in TOKEN_KINDS)}, max(day)
        FROM daily_usage GROUP BY 1, 2""",
    *[f"""INSERT INTO period_spend (user_id, period, period_start, cost_micros, messages)
        SELECT user_id, '{period}', {start}, sum(cost_micros), sum(messages)
        FROM daily_usage GROUP BY 1, 3 ORDER BY 3, 1"""
      # ISO weeks start on Monday, as the ledger's weeks do.
      for period, start in (("day", "day"), ("week", "date_trunc('week', day)::date"),
                            ("month", "date_trunc('month', day)::date"))],
    f"""INSERT INTO chat_daily_usage (chat_id, day, user_id, messages, unpriced_messages,
        cost_micros, {_TOKEN_COLUMNS})
        SELECT m.chat_id, {_DAY}, m.user_id, {_MEASURES}, {_sums()}
        FROM messages m WHERE m.chat_id IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 2, 3, 1""",
]


def _month_partitions(url: str, first: datetime, last: datetime) -> None:
    """On a partitioned ledger, the months the messages will fall in."""
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            if is_partitioned(conn):
                create_partitions(conn, months_between(month_of(first), month_of(last)))
    finally:
        engine.dispose()


def seed(url: str, *, users: int = 10_000, messages: int = 10_000_000, models: int = 50,
         models_per_user: int = 3, days: int = 90, now: datetime | None = None,
         batch: int = 2_000_000, log: bool = True, revision: str = "head") -> None:
    """Fill the empty (or new) ledger at `url`; its schema is created by the migrations (up to
    `revision`)."""
    now = now or datetime.now(UTC)
    upgrade(url, revision)
    _month_partitions(url, now - timedelta(days=days), now)
    started = time.monotonic()

    def say(text: str) -> None:
        if log:
            print(f"[seed {time.monotonic() - started:6.1f}s] {text}", flush=True)

    active, chats = active_days(days), chats_per_user(days)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        _reference_data(cur, users, models, chats, now)
        _unpriced_kinds(cur, models)
        _shapes(cur, models)
        say(f"{users} users active on {active} of {days} days, {models} models, "
            f"{users * chats} chats")
        for first in range(0, messages, batch):
            last = min(messages, first + batch) - 1
            cur.execute(_MESSAGES, {
                "today": today, "today_secs": max(1, int((now - today).total_seconds())),
                "days": days, "active": active, "cells": users * active, "users": users,
                "model_days": MODEL_DAYS, "per_user": models_per_user, "models": models,
                "chats": chats, "chat_days": CHAT_DAYS, "shapes": SHAPES_PER_MODEL,
                "first": first, "last": last})
            say(f"messages {last + 1:,}")
        for statement in _ROLLUPS:
            cur.execute(statement)
            say(f"rollup: {statement.split()[2]} ({cur.rowcount:,} rows)")
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    say("done")


def database_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def _seeded_as_asked(url: str, messages: int, users: int, days: int) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM users), "
                "(SELECT count(*) FROM groups), (SELECT count(*) FROM chats)").fetchone()
    except psycopg.Error:
        return False
    return counts == (messages, users, GROUPS, users * chats_per_user(days))


def ensure_ledger(admin_url: str, name: str, messages: int, users: int = 10_000,
                  reseed: bool = False, days: int = 90) -> str:
    """The benchmark ledger `name`, seeded when missing or different (it takes minutes)."""
    url = database_url(admin_url, name)
    if not reseed and _seeded_as_asked(url, messages, users, days):
        upgrade(url)  # a ledger kept from an earlier run follows the schema's migrations
        return url
    print(f"seeding {name}: {users:,} users, {messages:,} messages over {days} days "
          "(takes minutes)", flush=True)
    recreate_database(admin_url, name)
    seed(url, users=users, messages=messages, days=days)
    return url


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The data set bench/ledger.py and bench/exporter.py measure on: two ledgers with the same
    users and models, one large and one small, so a figure's growth with the messages shows."""
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--small-messages", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90, help="history the messages spread over")
    parser.add_argument("--reseed", action="store_true")


def _ledger_name(messages: int, days: int) -> str:
    if days == 90:  # the name earlier runs kept their ledgers under
        return f"am_bench_{messages // 1_000_000}m"
    return f"am_bench_{days}d_{messages}"


def dataset_ledgers(args: argparse.Namespace) -> dict[int, str]:
    """Message count -> URL of its ledger (small one first), seeded when missing."""
    return {messages: ensure_ledger(args.admin_url, _ledger_name(messages, args.days),
                                    messages, args.users, args.reseed, args.days)
            for messages in (args.small_messages, args.messages)}


def recreate_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="operator-style postgresql:// URL of an empty database")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    seed(args.url, users=args.users, messages=args.messages, models=args.models, days=args.days,
         now=datetime.now(UTC) - timedelta(seconds=1))


if __name__ == "__main__":
    main()
