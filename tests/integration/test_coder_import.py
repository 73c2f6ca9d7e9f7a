"""`agentmeter coder import` from a Coder database of the test's own into a real ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, func, select

from ledger.coder_identity import CoderUser, save_coder_user
from ledger.engine import create_sync_engine
from ledger.periods import Period, period_bounds
from ledger.schema import messages, users
from ledger.settings import DatabaseSettings
from ledger.spend import limit_status
from tests.support.coder_database import CoderDatabase, coder_database
from tests.support.databases import pg_available
from tests.support.requirements import missing

# Coder's resolution of a user's effective limit, from its ResolveUserChatSpendLimit query and
# group_members_expanded (group members plus each organisation's members in its "Everyone"
# group, whose id is the organisation's): the oracle the imported policy must agree with.
CODER_RESOLUTION = """
SELECT u.username,
       CASE WHEN NOT cfg.enabled THEN NULL
            WHEN u.chat_spend_limit_micros IS NOT NULL THEN u.chat_spend_limit_micros
            WHEN gl.limit_micros IS NOT NULL THEN gl.limit_micros
            WHEN cfg.default_limit_micros > 0 THEN cfg.default_limit_micros END,
       CASE WHEN NOT cfg.enabled THEN 'disabled'
            WHEN u.chat_spend_limit_micros IS NOT NULL THEN 'user'
            WHEN gl.limit_micros IS NOT NULL THEN 'group'
            WHEN cfg.default_limit_micros > 0 THEN 'default' ELSE 'none' END
FROM chat_usage_limit_config cfg CROSS JOIN users u
LEFT JOIN LATERAL (
    SELECT MIN(g.chat_spend_limit_micros) AS limit_micros
    FROM groups g
    JOIN (SELECT user_id, group_id FROM group_members
          UNION SELECT user_id, organization_id FROM organization_members) m
      ON m.group_id = g.id
    WHERE m.user_id = u.id AND g.chat_spend_limit_micros IS NOT NULL) gl ON TRUE
ORDER BY u.username
"""
SONNET = {"max_output_tokens": 64000, "cost": {
    "input_price_per_million_tokens": "3", "output_price_per_million_tokens": "15",
    "cache_read_price_per_million_tokens": "0.3", "cache_write_price_per_million_tokens": "3.75"}}
GPT5 = {"cost": {"input_price_per_million_tokens": "1.250",
                 "output_price_per_million_tokens": "10"}}
O1_PRO = {"cost": {"input_price_per_million_tokens": "150",
                   "output_price_per_million_tokens": "600.00"}}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    full.pop("AGENTMETER_CONFIG", None)
    result = subprocess.run([sys.executable, "-m", "agentmeter", *args], capture_output=True,
                            text=True, env=full, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def coder_db() -> Iterator[CoderDatabase]:
    reason = pg_available()
    if reason is not None:
        missing(reason)
    with coder_database() as db:
        yield db


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    yield engine
    engine.dispose()


def _ledger_limits(engine: Engine, now: datetime) -> dict[str, tuple[int | None, str, int]]:
    with engine.connect() as conn:
        found = {}
        for row in conn.execute(select(users.c.id, users.c.username)):
            status = limit_status(conn, row.id, now)
            found[row.username] = (status.limit_micros, status.limit_source.value,
                                   status.spent_micros)
    return found


def test_the_written_policy_gives_coders_limits_and_the_spend_carries_over(
        coder_db: CoderDatabase, engine: Engine, ledger_url: str, tmp_path: Path) -> None:
    db = coder_db
    now = datetime.now(UTC)
    month_start = period_bounds(Period.MONTH, now)[0]
    in_month = month_start + (now - month_start) / 2
    coder_org = db.organization("coder", default=True)
    research = db.organization("research")
    ursula = db.user("ursula", [coder_org], limit_micros=30_000_000)  # her own limit
    gina = db.user("gina", [coder_org])  # the lowest of her groups' limits
    dora = db.user("dora", [coder_org])  # only a group without a limit: the default
    rita = db.user("rita", [research])  # research's Everyone ($10) beats gpu ($300)
    db.group("ml", coder_org, [ursula, gina], 200_000_000)
    db.group("interns", coder_org, [gina], 20_000_000)
    db.group("nolimit", coder_org, [dora])
    db.group("gpu", research, [rita], 300_000_000)
    db.set_group_limit(research, 10_000_000)
    sonnet = db.model("anthropic", "claude-sonnet-4-5", SONNET)
    gpt = db.model("openai", "gpt-5", GPT5)
    db.model("bedrock", "anthropic.claude-3-haiku", GPT5)
    db.model("openai", "gpt-odd", {"cost": {"input_price_per_million_tokens": "abc"}})
    chat = db.chat(ursula)
    db.message(chat, sonnet, in_month, 123_456)
    db.message(chat, sonnet, in_month + timedelta(seconds=1), 2_000_001, cache_read=5000)
    db.message(db.chat(gina), gpt, in_month, 777_777)
    db.message(db.chat(rita), gpt, in_month, None)  # Coder recorded no cost: unpriced
    db.message(db.chat(dora), sonnet, month_start - timedelta(days=3), 5_000_000)  # before
    env = {"AGENTMETER_DATABASE_URL": ledger_url}
    policy = tmp_path / "policy.yaml"
    run(env, "db", "upgrade")
    # Users the policy does not name come from `coder sync` or a first Coder token.
    with engine.begin() as conn:
        for row in db.conn.execute("SELECT id, username, name, email FROM users"):
            save_coder_user(conn, CoderUser(str(row[0]), row[1], row[2], row[3], False))

    expected_spend = {"ursula": 2_123_457, "gina": 777_777, "rita": 0, "dora": 0}
    for enabled, default in ((True, 50_000_000), (True, 0), (False, 50_000_000)):
        db.limits(enabled, default)
        imported = run(env, "coder", "import", "--database-url", db.url, "--out", str(policy),
                       "--usage-since", month_start.date().isoformat())
        run(env, "apply", "-f", str(policy))

        assert "provider bedrock is not routed" in imported.stderr
        assert "gpt-odd" in imported.stderr and "cannot be read" in imported.stderr
        coder_says = {name: (limit, source) for name, limit, source
                      in db.conn.execute(CODER_RESOLUTION)}
        ledger_says = _ledger_limits(engine, now)
        assert {name: ledger_says[name][:2] for name in coder_says} == coder_says
        assert {name: ledger_says[name][2] for name in coder_says} == expected_spend

    sources = set()
    for enabled, default in ((True, 50_000_000), (True, 0)):
        db.limits(enabled, default)
        sources |= {source for _, _, source in db.conn.execute(CODER_RESOLUTION)}
    assert sources == {"user", "group", "default", "none"}  # every case was checked

    with engine.connect() as conn:
        copied = conn.execute(select(func.count()).select_from(messages)).scalar()
        ids = set(conn.execute(select(messages.c.id)).scalars())
    assert copied == 4
    assert all(i.startswith("coder-chat-message:") for i in ids)
    again = run(env, "coder", "import", "--database-url", db.url, "--out", str(policy),
                "--usage-since", month_start.date().isoformat())
    assert "copied 0 messages" in again.stdout
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(messages)).scalar() == copied


def test_a_database_without_coders_limit_tables_is_refused_in_one_line(
        coder_db: CoderDatabase, ledger_url: str) -> None:
    db = coder_db
    db.conn.execute("DROP TABLE chat_usage_limit_config")
    full = {**os.environ, "AGENTMETER_DATABASE_URL": ledger_url}
    result = subprocess.run([sys.executable, "-m", "agentmeter", "coder", "import",
                             "--database-url", db.url], capture_output=True, text=True,
                            env=full, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "agentmeter: error: no chat_usage_limit_config table: not a Coder database with "
        "native chat usage limits (Coder 2.35 or earlier)"]


# Later Coder versions moved the limits into tables of their own and renamed the model
# configuration's JSON column (coderd/database/migrations); the import reads both layouts.
LATER_LAYOUT = """
CREATE TABLE chat_user_spend_limits (
    user_id uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE, spend_limit_micros bigint);
CREATE TABLE chat_group_spend_limits (
    group_id uuid PRIMARY KEY REFERENCES groups(id) ON DELETE CASCADE, spend_limit_micros bigint);
INSERT INTO chat_user_spend_limits SELECT id, chat_spend_limit_micros FROM users;
INSERT INTO chat_group_spend_limits SELECT id, chat_spend_limit_micros FROM groups;
ALTER TABLE users DROP COLUMN chat_spend_limit_micros;
ALTER TABLE groups DROP COLUMN chat_spend_limit_micros;
ALTER TABLE chat_model_configs RENAME COLUMN options TO model_config;
"""


def test_both_layouts_of_coders_limit_tables_give_the_same_policy(
        coder_db: CoderDatabase, ledger_url: str, tmp_path: Path) -> None:
    db = coder_db
    org = db.organization("coder", default=True)
    ursula = db.user("ursula", [org], limit_micros=30_000_000)
    gina = db.user("gina", [org])
    db.group("ml", org, [ursula, gina], 200_000_000)
    db.group("nolimit", org, [gina])
    db.limits(True, 50_000_000, period="week")
    db.model("anthropic", "claude-sonnet-4-5", SONNET)
    db.model("openai", "claude-sonnet-4-5", GPT5)  # the same name twice: the first is kept
    db.model("openai", "o1-pro", O1_PRO)
    env = {"AGENTMETER_DATABASE_URL": ledger_url}

    before = run(env, "coder", "import", "--database-url", db.url)
    db.conn.execute(LATER_LAYOUT)
    after = run(env, "coder", "import", "--database-url", db.url)

    assert after.stdout == before.stdout
    written = yaml.safe_load(before.stdout)
    assert written["limits"] == {"enabled": True, "period": "week", "group_policy": "lowest",
                                 "default_limit_usd": "50"}
    assert written["groups"] == [{"name": "ml", "limit_usd": "200",
                                  "members": ["gina", "ursula"]}]
    assert [(u["username"], u.get("limit_usd")) for u in written["users"]] == [
        ("gina", None), ("ursula", "30")]
    assert written["models"] == [
        {"name": "claude-sonnet-4-5", "provider": "anthropic", "enabled": True,
         "max_output_tokens": 64000,
         "pricing": {"input": "3", "output": "15", "cache_read": "0.3", "cache_write": "3.75"}},
        {"name": "o1-pro", "provider": "openai", "enabled": True,
         "pricing": {"input": "150", "output": "600"}}]
    assert "claude-sonnet-4-5: also configured for openai" in before.stderr


def test_an_unreachable_coder_database_is_one_line(ledger_url: str) -> None:
    full = {**os.environ, "AGENTMETER_DATABASE_URL": ledger_url}
    result = subprocess.run([sys.executable, "-m", "agentmeter", "coder", "import",
                             "--database-url", "postgresql://nobody@127.0.0.1:1/coder"],
                            capture_output=True, text=True, env=full, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentmeter: error: Coder database: ")


def test_a_model_coder_did_not_price_is_never_free_by_accident(
        coder_db: CoderDatabase, ledger_url: str, tmp_path: Path) -> None:
    coder_db.model("openai", "gpt-4o", {})  # no cost in Coder, known to the catalog
    coder_db.model("anthropic", "in-house-model", {"cost": {}})  # known nowhere
    env = {"AGENTMETER_DATABASE_URL": ledger_url}
    policy = tmp_path / "policy.yaml"

    result = run(env, "coder", "import", "--database-url", coder_db.url, "--out", str(policy))

    written = yaml.safe_load(policy.read_text())
    assert written["models"] == [
        {"name": "gpt-4o", "provider": "openai", "enabled": True},
        {"name": "in-house-model", "provider": "anthropic", "enabled": True,
         "pricing": "none"}]
    assert "gpt-4o: no price in Coder" in result.stderr
    assert "gpt-4o: priced from the genai-prices catalog instead" in result.stderr
    assert "in-house-model: not in the price catalog either" in result.stderr
    run(env, "db", "upgrade")
    applied = run(env, "apply", "-f", str(policy))  # the written file is one apply accepts
    assert "gpt-4o" in applied.stdout
    prices = run(env, "prices", "gpt-4o", "--json")
    assert "catalog" in prices.stdout
