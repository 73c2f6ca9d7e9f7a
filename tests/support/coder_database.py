"""A Coder database of the test's own, with the tables of Coder's native chat usage limits.

The DDL is written from the facts of Coder's migrations (coderd/database/migrations): the
limit configuration row, `chat_spend_limit_micros` on users and groups, model configurations
with prices in `options->'cost'` as decimal strings, chats owned through `chats.owner_id` and
messages carrying `total_cost_micros`. Only the columns agentmeter reads, and the ones that make
the rows realistic, are here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from tests.support.databases import create_database, drop_database, pg_database_url

DDL = """
CREATE TABLE organizations (
    id uuid PRIMARY KEY, name text NOT NULL UNIQUE, display_name text NOT NULL DEFAULT '',
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE users (
    id uuid PRIMARY KEY, email text NOT NULL, username text NOT NULL, name text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'dormant', 'suspended')),
    login_type text NOT NULL DEFAULT 'password', deleted boolean NOT NULL DEFAULT false,
    is_system boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
    chat_spend_limit_micros bigint DEFAULT NULL
        CHECK (chat_spend_limit_micros IS NULL OR chat_spend_limit_micros > 0)
);
CREATE TABLE organization_members (
    user_id uuid NOT NULL REFERENCES users(id), organization_id uuid NOT NULL
        REFERENCES organizations(id),
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
    roles text[] NOT NULL DEFAULT '{}', PRIMARY KEY (organization_id, user_id)
);
CREATE TABLE groups (
    id uuid PRIMARY KEY, name text NOT NULL, display_name text NOT NULL DEFAULT '',
    organization_id uuid NOT NULL REFERENCES organizations(id),
    avatar_url text NOT NULL DEFAULT '', quota_allowance integer NOT NULL DEFAULT 0,
    source text NOT NULL DEFAULT 'user',
    chat_spend_limit_micros bigint DEFAULT NULL
        CHECK (chat_spend_limit_micros IS NULL OR chat_spend_limit_micros > 0),
    UNIQUE (name, organization_id)
);
CREATE TABLE group_members (
    user_id uuid NOT NULL REFERENCES users(id), group_id uuid NOT NULL REFERENCES groups(id),
    UNIQUE (user_id, group_id)
);
CREATE TABLE chat_usage_limit_config (
    id bigserial PRIMARY KEY,
    singleton boolean NOT NULL DEFAULT true CHECK (singleton), UNIQUE (singleton),
    enabled boolean NOT NULL DEFAULT false,
    default_limit_micros bigint NOT NULL DEFAULT 0 CHECK (default_limit_micros >= 0),
    period text NOT NULL DEFAULT 'month' CHECK (period IN ('day', 'week', 'month')),
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO chat_usage_limit_config (singleton) VALUES (true);
CREATE TABLE chat_providers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), provider text NOT NULL UNIQUE,
    display_name text NOT NULL DEFAULT '', api_key text NOT NULL DEFAULT '',
    enabled boolean NOT NULL DEFAULT true
);
CREATE TABLE chat_model_configs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider text NOT NULL REFERENCES chat_providers(provider) ON DELETE CASCADE,
    model text NOT NULL, display_name text NOT NULL DEFAULT '',
    enabled boolean NOT NULL DEFAULT true, is_default boolean NOT NULL DEFAULT false,
    deleted boolean NOT NULL DEFAULT false, deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
    context_limit bigint NOT NULL CHECK (context_limit > 0),
    compression_threshold integer NOT NULL DEFAULT 70,
    options jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE TABLE chats (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner_id uuid NOT NULL REFERENCES users(id),
    title text NOT NULL DEFAULT '', status text NOT NULL DEFAULT 'waiting',
    last_model_config_id uuid REFERENCES chat_model_configs(id),
    archived boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE chat_messages (
    id bigserial PRIMARY KEY, chat_id uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    model_config_id uuid REFERENCES chat_model_configs(id),
    created_at timestamptz NOT NULL DEFAULT now(), role text NOT NULL, content jsonb,
    input_tokens bigint, output_tokens bigint, total_tokens bigint, reasoning_tokens bigint,
    cache_creation_tokens bigint, cache_read_tokens bigint, context_limit bigint,
    compressed boolean NOT NULL DEFAULT false, total_cost_micros bigint, runtime_ms bigint,
    deleted boolean NOT NULL DEFAULT false
);
"""


class CoderDatabase:
    """Rows go in through small helpers; `url` is what `coder import --database-url` takes."""

    def __init__(self, conn: psycopg.Connection[Any], url: str) -> None:
        self.conn = conn
        self.url = url

    def organization(self, name: str, default: bool = False) -> str:
        org_id = str(uuid.uuid4())
        self.conn.execute("INSERT INTO organizations (id, name, display_name, is_default) "
                          "VALUES (%s, %s, %s, %s)", (org_id, name, name.title(), default))
        # Coder's "Everyone" group of an organisation has the organisation's id.
        self.conn.execute("INSERT INTO groups (id, name, organization_id) VALUES (%s, %s, %s)",
                          (org_id, "Everyone", org_id))
        return org_id

    def user(self, username: str, orgs: list[str], limit_micros: int | None = None,
             status: str = "active") -> str:
        user_id = str(uuid.uuid4())
        self.conn.execute(
            "INSERT INTO users (id, email, username, name, status, chat_spend_limit_micros) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (user_id, f"{username}@example.com", username, username.title() + " Example",
             status, limit_micros))
        for org in orgs:
            self.conn.execute("INSERT INTO organization_members (user_id, organization_id) "
                              "VALUES (%s, %s)", (user_id, org))
        return user_id

    def group(self, name: str, org: str, members: list[str],
              limit_micros: int | None = None) -> str:
        group_id = str(uuid.uuid4())
        self.conn.execute("INSERT INTO groups (id, name, organization_id, "
                          "chat_spend_limit_micros) VALUES (%s, %s, %s, %s)",
                          (group_id, name, org, limit_micros))
        for member in members:
            self.conn.execute("INSERT INTO group_members (user_id, group_id) VALUES (%s, %s)",
                              (member, group_id))
        return group_id

    def set_group_limit(self, group_id: str, limit_micros: int | None) -> None:
        self.conn.execute("UPDATE groups SET chat_spend_limit_micros = %s WHERE id = %s",
                          (limit_micros, group_id))

    def limits(self, enabled: bool, default_limit_micros: int, period: str = "month") -> None:
        self.conn.execute("UPDATE chat_usage_limit_config SET enabled = %s, "
                          "default_limit_micros = %s, period = %s",
                          (enabled, default_limit_micros, period))

    def model(self, provider: str, model: str, options: dict[str, Any]) -> str:
        self.conn.execute("INSERT INTO chat_providers (provider) VALUES (%s) "
                          "ON CONFLICT DO NOTHING", (provider,))
        row = self.conn.execute(
            "INSERT INTO chat_model_configs (provider, model, display_name, context_limit, "
            "options) VALUES (%s, %s, %s, 200000, %s) RETURNING id",
            (provider, model, model, json.dumps(options))).fetchone()
        assert row is not None
        return str(row[0])

    def chat(self, owner: str) -> str:
        row = self.conn.execute("INSERT INTO chats (owner_id, title) VALUES (%s, 'refactor') "
                                "RETURNING id", (owner,)).fetchone()
        assert row is not None
        return str(row[0])

    def message(self, chat: str, model_config: str, at: datetime, cost_micros: int | None,
                input_tokens: int = 1200, output_tokens: int = 300,
                cache_read: int = 0, cache_write: int = 0) -> None:
        """An assistant turn, after the user turn that asked for it (which has no usage)."""
        self.conn.execute("INSERT INTO chat_messages (chat_id, created_at, role, content) "
                          "VALUES (%s, %s, 'user', '\"please\"')", (chat, at))
        self.conn.execute(
            "INSERT INTO chat_messages (chat_id, model_config_id, created_at, role, "
            "input_tokens, output_tokens, total_tokens, reasoning_tokens, "
            "cache_creation_tokens, cache_read_tokens, total_cost_micros, runtime_ms) "
            "VALUES (%s, %s, %s, 'assistant', %s, %s, %s, 0, %s, %s, %s, 2100)",
            (chat, model_config, at, input_tokens, output_tokens,
             input_tokens + output_tokens, cache_write, cache_read, cost_micros))


@contextmanager
def coder_database() -> Iterator[CoderDatabase]:
    """A fresh database holding Coder's tables; dropped afterwards."""
    name = create_database("am_coder")
    url = pg_database_url(name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(DDL)
            yield CoderDatabase(conn, url)
    finally:
        drop_database(name)
