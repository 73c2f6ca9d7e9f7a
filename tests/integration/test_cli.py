"""The `agentmeter` command as an operator runs it: real processes, real ledger."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ledger.engine import create_sync_engine
from ledger.keys import hash_key
from ledger.schema import api_keys, messages
from ledger.settings import DatabaseSettings
from ledger.tokens import TokenUsage
from tests.support.ledger_seed import record

EXAMPLE = str(Path("examples/policy.yaml").resolve())


def run(url: str, *args: str, ok: bool = True,
        env_vars: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTMETER_DATABASE_URL": url, **(env_vars or {})}
    env.pop("AGENTMETER_CONFIG", None)
    result = subprocess.run([sys.executable, "-m", "agentmeter", *args], capture_output=True,
                            text=True, env=env, timeout=60)
    if ok:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/cli.db"


def test_upgrade_apply_keys_and_usage(fresh_sqlite: str) -> None:
    url = fresh_sqlite
    missing_tables = run(url, "apply", "-f", EXAMPLE, ok=False)
    assert "agentmeter db upgrade" in missing_tables.stderr
    run(url, "db", "upgrade")
    dry = run(url, "apply", "-f", EXAMPLE, "--dry-run")
    assert "~ user alice: limit none -> $500.00" in dry.stdout
    assert run(url, "apply", "-f", EXAMPLE, "--dry-run").stdout == dry.stdout  # wrote nothing
    applied = run(url, "apply", "-f", EXAMPLE)
    assert applied.stdout.strip().endswith("changed")
    assert run(url, "apply", "-f", EXAMPLE).stdout.strip() == "nothing to change"

    created = run(url, "keys", "create", "alice")
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("am-") and " " not in key
    engine = create_sync_engine(DatabaseSettings(url=url))
    with engine.connect() as conn:
        stored = conn.execute(select(api_keys)).one()
    assert stored.key_hash == hash_key(key) and key not in str(tuple(stored))
    listed = run(url, "keys", "list", "alice").stdout
    assert stored.id in listed and key not in listed and "active" in listed
    assert "revoked 1 key of alice" in run(url, "keys", "revoke", "alice").stdout
    assert "revoked" in run(url, "keys", "list").stdout
    run(url, "keys", "revoke", "alice", "--key-id", "key_nope", ok=False)

    record(engine, "alice", "claude-sonnet-4-5", TokenUsage(input=1_000_000, output=10),
           datetime.now(UTC), chat="x")
    engine.dispose()
    table = json.loads(run(url, "usage", "--json", "--search", "liddell").stdout)
    assert table["total"] == 1
    assert table["users"][0] | {} == table["users"][0]
    row = table["users"][0]
    # 1M input tokens pass the catalog's 200k threshold: every token at the long-context
    # prices, 6 and 22.5 USD per 1M.
    assert (row["username"], row["cost_micros"], row["messages"], row["chats"]) == (
        "alice", 6_000_225, 1, 1)
    text = run(url, "usage").stdout
    assert "alice" in text and "$6.000225" in text


def test_prices_shows_a_models_prices_and_their_source(fresh_sqlite: str,
                                                       tmp_path: Path) -> None:
    url = fresh_sqlite
    run(url, "db", "upgrade")
    run(url, "apply", "-f", EXAMPLE)
    catalog = run(url, "prices", "claude-sonnet-4-5-20250929").stdout  # by its alias
    assert catalog.startswith("model claude-sonnet-4-5 (anthropic)\n")
    assert ", catalog (genai-prices 0.2.5 anthropic/claude-sonnet-4-5)" in catalog
    assert "input above 200000                   6 USD per 1M tokens" in catalog
    assert "web_search                           10 USD per 1,000" in catalog
    own = json.loads(run(url, "prices", "gpt-5.4", "--json").stdout)
    assert (own["model"], own["current"]["source"]) == ("gpt-5.4", "policy")
    assert own["current"]["source_detail"] == EXAMPLE
    assert own["current"]["prices"]["cache_read above 272000"] == "0.45"
    assert own["current"]["prices"]["service_tier=flex output"] == "6.75"
    assert own["upcoming"] == []

    changed = tmp_path / "policy.yaml"
    changed.write_text(Path(EXAMPLE).read_text().replace("      input: 2.25\n",
                                                         "      input: 2.5\n"))
    dry = run(url, "apply", "-f", str(changed), "--dry-run").stdout
    assert "~ model gpt-5.4: price input 2.25 -> 2.5" in dry
    assert "prices from" in dry  # the file is another source now
    assert json.loads(run(url, "prices", "gpt-5.4", "--json").stdout) == own  # dry: unchanged


@pytest.mark.parametrize("args", [
    ("prices", "nope"),
    ("keys", "create", "nobody"),
    ("usage", "--from", "yesterday"),
    ("usage", "--from", "2026-11-02", "--to", "2026-11-01"),
    ("apply", "-f", "/nonexistent.yaml"),
    ("--config", "/nonexistent.yaml", "usage"),
])
def test_errors_are_one_line_without_traceback(fresh_sqlite: str, args: tuple[str, ...]) -> None:
    run(fresh_sqlite, "db", "upgrade")
    run(fresh_sqlite, "apply", "-f", EXAMPLE)
    result = run(fresh_sqlite, *args, ok=False)
    assert result.stderr.startswith("agentmeter: error: ")


def test_bad_policy_names_file_line_and_key(fresh_sqlite: str, tmp_path: Path) -> None:
    run(fresh_sqlite, "db", "upgrade")
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits:\n  enabled: true\n  group_policy: median\n")
    result = run(fresh_sqlite, "apply", "-f", str(bad), ok=False)
    assert f"{bad}:3: limits.group_policy" in result.stderr


def test_cli_on_postgresql(pg_url: str) -> None:
    run(pg_url, "db", "upgrade")
    run(pg_url, "apply", "-f", EXAMPLE)
    assert run(pg_url, "keys", "create", "bob").stdout.strip().splitlines()[-1].startswith("am-")


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = run("postgresql://postgres@127.0.0.1:1/none", "db", "upgrade", ok=False)
    assert "database error" in result.stderr


def test_db_prune_says_what_goes_then_removes_it(fresh_sqlite: str) -> None:
    url = fresh_sqlite
    keep_30 = {"AGENTMETER_LEDGER_MESSAGE_RETENTION_DAYS": "30"}
    run(url, "db", "upgrade")
    run(url, "apply", "-f", EXAMPLE)
    off = run(url, "db", "prune", ok=False)
    assert "ledger.message_retention_days is 0" in off.stderr

    engine = create_sync_engine(DatabaseSettings(url=url))
    now = datetime.now(UTC)
    old = [datetime(now.year - 1, 3, 4, 5, 6, tzinfo=UTC), now - timedelta(days=45)]
    for at in [*old, now - timedelta(days=2)]:
        record(engine, "alice", "claude-sonnet-4-5", TokenUsage(input=1000), at, chat="x")
    whole = ("usage", "--json", "--from", "2000-01-01", "--to", f"{now + timedelta(days=1):%F}")
    before = json.loads(run(url, *whole).stdout)
    assert before["users"][0]["messages"] == 3

    dry = run(url, "db", "prune", "--dry-run", env_vars=keep_30).stdout
    edge = (now - timedelta(days=30)).strftime("%Y-%m-%d 00:00")
    assert dry.strip() == (f"would remove 2 messages created {old[0]:%Y-%m-%d %H:%M} to "
                           f"{old[1]:%Y-%m-%d %H:%M} UTC (everything before {edge} UTC); "
                           "rollups, totals and chats are kept")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(messages)).scalar() == 3
    assert run(url, "db", "prune", env_vars=keep_30).stdout == dry.replace("would remove",
                                                                             "removed")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(messages)).scalar() == 1
    engine.dispose()
    assert run(url, "db", "prune", env_vars=keep_30).stdout.strip() == \
        "nothing to prune: no message is older than the retention of 30 days"
    assert json.loads(run(url, *whole).stdout) == before


def test_db_prune_refuses_while_another_process_maintains(pg_url: str) -> None:
    import psycopg

    from ledger.prune import MAINTENANCE_LOCK_KEY

    keep_30 = {"AGENTMETER_LEDGER_MESSAGE_RETENTION_DAYS": "30"}
    with psycopg.connect(pg_url, autocommit=True) as exporter:
        exporter.execute("SELECT pg_advisory_lock(%s)", (MAINTENANCE_LOCK_KEY,))
        busy = run(pg_url, "db", "prune", ok=False, env_vars=keep_30)
        assert "another agentmeter process is pruning this ledger" in busy.stderr
        exporter.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK_KEY,))
    # Free again: it prunes (months earlier tests left behind, if any) or finds nothing.
    done = run(pg_url, "db", "prune", env_vars=keep_30).stdout
    assert done.startswith(("removed ", "nothing to prune: ")), done


def test_db_prune_drops_months_without_messages_on_postgresql(pg_url: str) -> None:
    import re
    from datetime import date

    from ledger.partitions import attached_partitions, create_partitions

    engine = create_sync_engine(DatabaseSettings(url=pg_url))
    with engine.begin() as conn:
        create_partitions(conn, [date(2019, 1, 1)])
    keep_30 = {"AGENTMETER_LEDGER_MESSAGE_RETENTION_DAYS": "30"}
    dry = run(pg_url, "db", "prune", "--dry-run", env_vars=keep_30).stdout.strip()
    assert re.fullmatch(r"would remove 0 messages \(everything before \d{4}-\d{2}-01 00:00 UTC\);"
                        r" rollups, totals and chats are kept", dry), dry
    assert run(pg_url, "db", "prune", env_vars=keep_30).stdout.strip() == \
        dry.replace("would remove", "removed")
    with engine.connect() as conn:
        assert "messages_2019_01" not in {p.name for p in attached_partitions(conn)}
    engine.dispose()
