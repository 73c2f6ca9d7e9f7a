"""Seeding a ledger for the exporter tests and reading a scrape back as plain values.

The ledger is seeded through its own functions (the policy file, `record_usage`); the expected
figures are summed from what `record_usage` answered.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from ledger.engine import create_sync_engine
from ledger.policy_apply import apply_policy
from ledger.policy_file import parse_policy
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from ledger.usage import UsageRecord, record_usage
from ledger.users import ensure_user, get_user

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
MONTH_START = datetime(2026, 3, 1, tzinfo=UTC)
MONTH_END = datetime(2026, 4, 1, tzinfo=UTC)

POLICY = """
limits:
  enabled: true
  period: month
  default_limit_usd: 50
  group_policy: lowest
groups:
  - name: ml
    limit_usd: 200
    members: [bob]
  - name: interns
    members: [erin]
users:
  - username: alice
    name: Alice Liddell
    limit_usd: 500
  - username: bob
    name: Bob "the builder"
  - username: carol
    limit_usd: unlimited
  - username: dave
  - username: erin
models:
  - name: claude-sonnet-4-5
    provider: anthropic
    pricing: {input: 3, output: 15, cache_read: 0.3, cache_write: 3.75, cache_write_1h: 6}
  - name: gpt-5
    provider: openai
    pricing: {input: 1.25, output: 10, cache_read: 0.125}
  - name: free-model
    provider: openai
    pricing: none
  - name: retired-model
    provider: openai
    enabled: false
    pricing: {input: 1, output: 1}
"""

# (user, model, usage, created_at, chat)
RECORDS: list[tuple[str, str, TokenUsage, datetime, str | None]] = [
    ("alice", "claude-sonnet-4-5",
     TokenUsage(input=1000, output=500, cache_read=2000, cache_write=100, cache_write_1h=10),
     NOW - timedelta(days=1), "a-1"),
    ("alice", "claude-sonnet-4-5", TokenUsage(input=10, cache_read=10), NOW - timedelta(days=2),
     "a-1"),
    # Last month: lifetime counters only, not the current period's spend.
    ("alice", "gpt-5", TokenUsage(input=7, output=3, cache_write=50),
     datetime(2026, 2, 20, 9, 30, tzinfo=UTC), "a-2"),
    ("bob", "gpt-5", TokenUsage(input=1_000_000), NOW - timedelta(hours=3), None),
    ("bob", "free-model", TokenUsage(input=100, output=200), NOW - timedelta(hours=2), "b-1"),
    ("carol", "mystery-model", TokenUsage(input=5), NOW - timedelta(minutes=5), None),
]

ODD_USERNAMES = [
    'quote"d',
    "back\\slash",
    "trailing\\",
    "new\nline",
    "tab\tuser",
    "emoji 🙂🚀",
    "comma,eq=brace{}",
    "ü" * 512,  # 1 KiB of UTF-8
]


@dataclass
class Expected:
    """The figures a scrape must show, summed from the ledger's answers to `record_usage`."""

    spend: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    messages: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    tokens: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    unpriced_messages: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    chats: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    period_spend: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def record(url: str, rows: list[tuple[str, str, TokenUsage, datetime, str | None]],
           expected: Expected | None = None) -> Expected:
    expected = expected if expected is not None else Expected()
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            for i, (username, model, usage, when, chat) in enumerate(rows):
                ensure_user(conn, username)
                user = get_user(conn, username)
                message_id = f"{username}-{model}-{when.isoformat()}-{i}"
                result = record_usage(conn, UsageRecord(
                    id=message_id[-64:], user_id=user.id, model=model,
                    provider="anthropic" if model.startswith("claude") else "openai",
                    usage=usage, created_at=when, chat=chat))
                assert result.inserted
                expected.spend[username, model] += result.cost_micros or 0
                expected.messages[username, model] += 1
                for kind, count in usage.items():
                    expected.tokens[username, model, kind.value] += count
                if result.cost_micros is None:
                    expected.unpriced_messages[model] += 1
                if chat:
                    expected.chats[username].add(chat)
                if MONTH_START <= when < MONTH_END:
                    expected.period_spend[username] += result.cost_micros or 0
    finally:
        engine.dispose()
    return expected


def seed(url: str, policy: str = POLICY) -> Expected:
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            apply_policy(conn, parse_policy(policy))
    finally:
        engine.dispose()
    return record(url, RECORDS)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def read(registry: CollectorRegistry) -> Samples:
    """One scrape of the registry, as {(series name, labels): value}."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in registry.collect() for s in family.samples}


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def seed_odd_users(url: str) -> Expected:
    return record(url, [(name, "claude-sonnet-4-5", TokenUsage(input=1000 + i),
                         NOW - timedelta(hours=1), f"chat-{i}")
                        for i, name in enumerate(ODD_USERNAMES)], seed(url))
