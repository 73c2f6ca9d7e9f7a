"""The ledger's tables (SQLAlchemy Core), shared by the sync and async engines.

Tables are created only by the Alembic migrations in ledger/migrations; this module is what the
queries are written against, and a test checks that the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Column sizes, also enforced where names enter (the policy file, the trusted user header).
USER_TEXT_LENGTH = 1024  # users.username, name, email
NAME_LENGTH = 255  # groups.name, models.name, model_aliases.alias
CODER_ID_LENGTH = 36  # a UUID as Coder writes it
ANSWER_ID_LENGTH = 255  # response_owners.response_id (OpenAI's are about 50 characters)

# Counted per message in the rollups: web searches, and messages priced with a gap
# (ledger.pricing.Gap: a variant, tier or fee without a price).
FEE_COLUMNS = ("web_searches", "unpriced_web_searches")
GAP_COLUMNS = ("variant_gap_messages", "tier_gap_messages", "fee_gap_messages")

TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                 "cache_write_1h_tokens")
UNPRICED_TOKEN_COLUMNS = tuple("unpriced_" + name for name in TOKEN_COLUMNS)


def _token_columns(prefix: str = "") -> list[Column[int]]:
    return [Column(prefix + name, BigInteger, nullable=False, server_default="0")
            for name in TOKEN_COLUMNS]


def _ts(name: str, **kw: object) -> Column:  # type: ignore[type-arg]
    return Column(name, DateTime(timezone=True), **kw)  # type: ignore[arg-type]


users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(USER_TEXT_LENGTH), nullable=False, unique=True),
    Column("name", String(USER_TEXT_LENGTH), nullable=False, server_default=""),
    Column("email", String(USER_TEXT_LENGTH), nullable=False, server_default=""),
    _ts("created_at", nullable=False),
    # Coder's user id (a UUID) for users synced from Coder or met through a Coder token: a
    # rename in Coder is the same user. NULL for users only the policy file declares.
    Column("coder_id", String(CODER_ID_LENGTH), nullable=True),
    # Suspended in Coder: refused (403) whatever their limit.
    Column("suspended", Boolean, nullable=False, server_default="0"),
    Index("ix_users_coder_id", "coder_id", unique=True),
)

groups = Table(
    "groups", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    _ts("created_at", nullable=False),
    # Coder's group id for groups synced from Coder: their members belong to the sync.
    Column("coder_id", String(CODER_ID_LENGTH), nullable=True),
    Index("ix_groups_coder_id", "coder_id", unique=True),
)

group_members = Table(
    "group_members", metadata,
    Column("group_id", Integer, ForeignKey("groups.id"), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), primary_key=True, index=True),
)

limit_config = Table(
    "limit_config", metadata,
    Column("id", Integer, primary_key=True),
    Column("enabled", Boolean, nullable=False, server_default="0"),
    Column("period", String(16), nullable=False, server_default="month"),
    Column("default_limit_micros", BigInteger, nullable=True),
    Column("group_policy", String(16), nullable=False, server_default="lowest"),
    _ts("updated_at", nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    CheckConstraint("period IN ('day', 'week', 'month')", name="period"),
    CheckConstraint("group_policy IN ('lowest', 'highest')", name="group_policy"),
    CheckConstraint("default_limit_micros IS NULL OR default_limit_micros > 0", name="default"),
)

# A row is an override; limit_micros NULL means `unlimited` (exempt).
user_limits = Table(
    "user_limits", metadata,
    Column("user_id", Integer, ForeignKey("users.id"), primary_key=True),
    Column("limit_micros", BigInteger, nullable=True),
    CheckConstraint("limit_micros IS NULL OR limit_micros > 0", name="positive"),
)

group_limits = Table(
    "group_limits", metadata,
    Column("group_id", Integer, ForeignKey("groups.id"), primary_key=True),
    Column("limit_micros", BigInteger, nullable=False),
    CheckConstraint("limit_micros > 0", name="positive"),
)

# A model's prices are its versions in `model_prices`.
models = Table(
    "models", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    Column("provider", String(32), nullable=False),
    Column("enabled", Boolean, nullable=False),
    # True while the policy file declares it; false for models only seen in traffic or removed.
    Column("declared", Boolean, nullable=False),
    Column("seen_in_traffic", Boolean, nullable=False, server_default="0"),
    Column("max_output_tokens", Integer, nullable=True),
    _ts("created_at", nullable=False),
)

# Every price version of every model, kept with the time it took effect (prices are never
# rewritten: a change is a new row). `prices` is a serialized ledger.pricing.PriceSheet in
# integer micro-dollars; NULL: unpriced on purpose from then on.
model_prices = Table(
    "model_prices", metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    _ts("effective_from", nullable=False),
    Column("source", String(16), nullable=False),  # catalog | policy
    # The catalog's version and name for the model, or the policy file.
    Column("source_detail", String(1024), nullable=False, server_default=""),
    Column("prices", JSON, nullable=True),
    _ts("recorded_at", nullable=False),
    CheckConstraint("source IN ('catalog', 'policy')", name="source"),
    Index("ix_model_prices_model_id_effective_from", "model_id", "effective_from"),
)

model_aliases = Table(
    "model_aliases", metadata,
    Column("alias", String(NAME_LENGTH), primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False, index=True),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    # SHA-256 of the key; the key itself is shown once and never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    _ts("created_at", nullable=False),
    _ts("revoked_at", nullable=True),
)

chats = Table(
    "chats", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("external_id", String(255), nullable=False),
    _ts("created_at", nullable=False),
    UniqueConstraint("user_id", "external_id"),
)

messages = Table(
    "messages", metadata,
    Column("id", String(64), primary_key=True),  # idempotency key of the usage record
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("chat_id", Integer, ForeignKey("chats.id"), nullable=True, index=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("provider", String(32), nullable=False),
    *_token_columns(),
    Column("unpriced_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cost_micros", BigInteger, nullable=True),  # NULL: unpriced
    Column("partial", Boolean, nullable=False, server_default="0"),
    _ts("created_at", nullable=False),
    # The price version that priced it (model_prices.id; NULL: unpriced), what the answer
    # reported it was served at, the tier threshold its input passed, its fees and gaps.
    Column("price_id", Integer, nullable=True),
    Column("service_tier", String(32), nullable=True),
    Column("batch", Boolean, nullable=False, server_default="0"),
    Column("speed", String(32), nullable=True),
    Column("tier_start", BigInteger, nullable=False, server_default="0"),
    Column("web_searches", BigInteger, nullable=False, server_default="0"),
    Column("pricing_gaps", String(32), nullable=True),  # e.g. "fee,variant"
    Index("ix_messages_user_id_created_at", "user_id", "created_at"),
)
# On PostgreSQL `messages` is partitioned by month of created_at (ledger/partitions.py) and its
# primary key is (id, created_at), as a partitioned table's must include the partition key; a
# record keeps its created_at when it is replayed, so its id alone still identifies it.

# One row: how far the raw messages go back, and what the last prune did (ledger/retention.py).
message_retention = Table(
    "message_retention", metadata,
    Column("id", Integer, primary_key=True),
    # Messages before this instant were pruned: a record older than it is refused, since its
    # id can no longer be checked against the ledger and the rollups already hold it.
    _ts("kept_since", nullable=True),
    _ts("pruned_at", nullable=True),  # the last successful prune
    Column("pruned_messages", BigInteger, nullable=False, server_default="0"),
    _ts("oldest_message_at", nullable=True),  # measured by the last maintenance run
    CheckConstraint("id = 1", name="single_row"),
)

def _rollup_measures() -> list[Column[int]]:
    return [Column(name, BigInteger, nullable=False, server_default="0")
            for name in ("messages", "unpriced_messages", "cost_micros")]


def _fee_and_gap_measures() -> list[Column[int]]:
    return [Column(name, BigInteger, nullable=False, server_default="0")
            for name in (*FEE_COLUMNS, *GAP_COLUMNS)]


# One row per (user, UTC day, model), written in the same transaction as each message.
daily_usage = Table(
    "daily_usage", metadata,
    Column("user_id", Integer, ForeignKey("users.id"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    *_rollup_measures(),
    *_token_columns(),
    *_token_columns("unpriced_"),
    *_fee_and_gap_measures(),
    Index("ix_daily_usage_day", "day"),
)

# Spend per (user, UTC day, model, price version): which prices priced what, kept after raw
# messages are pruned.
daily_price_usage = Table(
    "daily_price_usage", metadata,
    Column("user_id", Integer, ForeignKey("users.id"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("price_id", Integer, ForeignKey("model_prices.id"), primary_key=True),
    Column("messages", BigInteger, nullable=False, server_default="0"),
    Column("cost_micros", BigInteger, nullable=False, server_default="0"),
    Column("web_searches", BigInteger, nullable=False, server_default="0"),
)

# Lifetime totals per (user, model): the exporter's counters, O(users x models) per scrape.
usage_totals = Table(
    "usage_totals", metadata,
    Column("user_id", Integer, ForeignKey("users.id"), primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    *_rollup_measures(),
    *_token_columns(),
    *_token_columns("unpriced_"),
    *_fee_and_gap_measures(),
    # The latest UTC day with usage: "active users" without scanning the daily rollup.
    Column("last_day", Date, nullable=True),
)

PERIOD_KINDS = ("day", "week", "month")

# Priced spend per (user, period kind, period start), for all three kinds at once, so a limit
# check reads one row whatever the configured period, and a scrape one row per user.
period_spend = Table(
    "period_spend", metadata,
    Column("user_id", Integer, ForeignKey("users.id"), primary_key=True),
    Column("period", String(8), primary_key=True),
    Column("period_start", Date, primary_key=True),
    Column("cost_micros", BigInteger, nullable=False, server_default="0"),
    Column("messages", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("period IN ('day', 'week', 'month')", name="period"),
    # With user_id and cost_micros: the cost table sums a range's spend per user from the
    # index alone (ledger.reports).
    Index("ix_period_spend_period_period_start_user_id_cost_micros", "period", "period_start",
          "user_id", "cost_micros"),
)

# One row per (chat, UTC day): chat counts over a range and the per-chat breakdown.
chat_daily_usage = Table(
    "chat_daily_usage", metadata,
    Column("chat_id", Integer, ForeignKey("chats.id"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    *_rollup_measures(),
    *_token_columns(),
    # With chat_id: a user's distinct chats over a range from the index alone.
    Index("ix_chat_daily_usage_user_id_day_chat_id", "user_id", "day", "chat_id"),
)

# Strict enforcement: upper bounds held for requests in flight.
reservations = Table(
    "reservations", metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("amount_micros", BigInteger, nullable=False),
    _ts("created_at", nullable=False),
    _ts("expires_at", nullable=False),
)

# Whose each stored provider answer is (OpenAI Responses ids): all users share the gateway's
# provider key, so the gateway lets only the owner retrieve, delete or continue one. Written
# with the usage record of the answer that created it.
response_owners = Table(
    "response_owners", metadata,
    Column("response_id", String(ANSWER_ID_LENGTH), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    _ts("created_at", nullable=False),
)
