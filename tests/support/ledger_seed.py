"""Seeding a ledger through its own functions (the policy file and record_usage)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Connection, Engine

from ledger.policy_apply import apply_policy
from ledger.policy_file import parse_policy
from ledger.tokens import TokenUsage
from ledger.usage import RecordResult, UsageRecord, record_usage
from ledger.users import get_user

POLICY = """
limits: {enabled: true, period: month, default_limit_usd: 50, group_policy: lowest}
groups:
  - {name: ml, limit_usd: 200, members: [alice, bob]}
  - {name: interns, limit_usd: 20, members: [carol, bob]}
  - {name: nolimit, members: [erin]}
users:
  - {username: alice, name: Alice Liddell, email: alice@example.com, limit_usd: 500}
  - {username: bob, name: Bob Builder}
  - {username: carol, name: Carol Danvers}
  - {username: dave, name: Dave Lister, limit_usd: unlimited}
  - {username: erin, name: Erin Example}
models:
  - name: claude-sonnet-4-5
    aliases: [claude-sonnet-4-5-20250929]
    provider: anthropic
    max_output_tokens: 64000
    pricing: {input: 3, output: 15, cache_read: 0.3, cache_write: 3.75, cache_write_1h: 6}
  - name: gpt-5
    provider: openai
    pricing: {input: 1.25, output: 10, cache_read: 0.125}
  - name: mystery-model
    provider: openai
    pricing: none
"""


def apply_text(conn: Connection, text: str) -> list[str]:
    return apply_policy(conn, parse_policy(text, "test-policy.yaml"))


def seed_policy(engine: Engine, text: str = POLICY) -> None:
    with engine.begin() as conn:
        apply_text(conn, text)


def record(engine: Engine, username: str, model: str, usage: TokenUsage, at: datetime,
           chat: str | None = None, record_id: str | None = None,
           provider: str = "anthropic", partial: bool = False) -> RecordResult:
    with engine.begin() as conn:
        user = get_user(conn, username)
        return record_usage(conn, UsageRecord(
            id=record_id or uuid.uuid4().hex, user_id=user.id, model=model, provider=provider,
            usage=usage, created_at=at, chat=chat, partial=partial))
