"""The ledger as Prometheus sees it: spend, limits, lifetime counters and pricing gaps.

Every scrape reads the ledger's rollups (`ledger.totals`, `ledger.catalog`) in one read-only
transaction — O(users x models) rows, never the messages — and builds fresh metric families.
The lifetime counters come from the ledger's per-(user, model) totals, so they keep rising across
exporter restarts and never double-count. The only thing kept from one scrape to the next is the
rendered label text of the rows it exported (`LabelCaches`): values always come from the ledger,
and a scrape escapes only the users and models that are new since the last one.

Prices are those in effect at the scrape: a price version dated in the future shows once its
time has come, no `apply` needed. Pricing gaps carry a `gap` label: `price` (a token kind, or
the whole model, without a price), or `variant`, `tier`, `fee` (a service tier, tier or fee the
answers reported and the model has no price for: those messages were priced at the model's
highest price, their fees left unpriced). A model shows such a gap while it had one within
`active_window_days`.

Per-user series exist only for users with an effective limit or with spend in the last
`active_window_days`, at most `max_users` of them (the highest current spend first);
`agentmeter_series_dropped{collector="ledger"}` says how many were left out (0 included).
`agentmeter_limits_default_usd` is absent when there is no default limit, like
`agentmeter_user_limit_usd` for a user without a limit: 0 would read as "a limit of $0".

Sample::

    agentmeter_user_info{name="Alice Liddell",user="alice"} 1.0
    agentmeter_user_spend_usd{user="alice"} 12.345678
    agentmeter_user_limit_usd{source="user",user="alice"} 500.0
    agentmeter_user_limit_utilization_ratio{user="alice"} 0.024691356
    agentmeter_spend_usd_total{model="claude-sonnet-4-5",user="alice"} 40.5
    agentmeter_tokens_total{model="claude-sonnet-4-5",token_type="input",user="alice"} 120000.0
    agentmeter_messages_total{model="claude-sonnet-4-5",user="alice"} 31.0
    agentmeter_chats_total{user="alice"} 4.0
    agentmeter_limits_enabled 1.0
    agentmeter_limits_default_usd 50.0
    agentmeter_limits_period_end_timestamp_seconds 1.7988768e+09
    agentmeter_limits_info{group_policy="lowest",period="month"} 1.0
    agentmeter_models_without_pricing 1.0
    agentmeter_model_pricing_missing{gap="price",model="gpt-x",token_type="input"} 1.0
    agentmeter_model_pricing_missing{gap="variant",model="gpt-5",token_type=""} 1.0
    agentmeter_model_price_usd_per_million_tokens{model="claude-sonnet-4-5",token_type="input"} 3.0
    agentmeter_unpriced_messages_total{gap="price",model="gpt-x"} 2.0
    agentmeter_unpriced_messages_total{gap="variant",model="gpt-5"} 1.0
    agentmeter_fees_total{fee="web_search",model="claude-sonnet-4-5",user="alice"} 12.0
    agentmeter_unpriced_tokens_total{model="gpt-x",token_type="input"} 700.0
    agentmeter_series_dropped{collector="ledger"} 0.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from operator import itemgetter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Connection, Engine

from exporter.row_family import LabelCache, LabelRows, RowFamily
from exporter.settings import ExporterSettings
from ledger import metric_names as names
from ledger.catalog import (
    Model,
    ModelPricingGap,
    UnpricedUsage,
    enabled_models,
    models_without_pricing,
    pricing_gaps,
    recent_traffic_gaps,
    unpriced_usage_by_model,
)
from ledger.limit_store import load_limit_config
from ledger.limits import LimitConfig
from ledger.money import MICROS_PER_USD
from ledger.periods import as_utc, period_bounds
from ledger.pricing import GAPS, Fee, Gap
from ledger.tokens import TOKEN_KINDS
from ledger.totals import (
    LIFETIME_TOKENS,
    LifetimeTotal,
    UserSnapshot,
    chats_per_user,
    lifetime_totals,
    model_names,
    user_snapshots,
)

Clock = Callable[[], datetime]

COLLECTOR_NAME = "ledger"
# The token_type label values, in the order of a LifetimeTotal's token counts.
KIND_NAMES = tuple(kind.value for kind in TOKEN_KINDS)
_token_counts = itemgetter(LIFETIME_TOKENS)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _usd(micros: int) -> float:
    return micros / MICROS_PER_USD


@dataclass(frozen=True)
class LedgerSnapshot:
    """What one scrape read from the ledger, already cut to the exported users.

    `lifetime[i]` is the (user, model) named by `lifetime_labels[i]`; `chats` is per exported
    user, in `users` order.
    """

    config: LimitConfig
    period_end: datetime
    users: list[UserSnapshot]
    dropped_users: int
    lifetime: list[LifetimeTotal]
    lifetime_labels: list[tuple[str, str]]
    chats: list[int]
    models: list[Model]
    without_pricing: list[ModelPricingGap]
    gaps: list[ModelPricingGap]
    traffic_gaps: list[tuple[str, Gap]]
    unpriced: list[UnpricedUsage]


def read_snapshot(conn: Connection, now: datetime, *, active_since: date,
                  max_users: int) -> LedgerSnapshot:
    config = load_limit_config(conn)
    _, period_end = period_bounds(config.period, now)
    # Sorted by current spend, highest first: the cap keeps the users that matter most.
    candidates = user_snapshots(conn, now, active_since, config)
    kept = candidates[:max_users]
    exported = {user.user_id: user.username for user in kept}
    model_name = model_names(conn)
    lifetime = [row for row in lifetime_totals(conn) if row.user_id in exported]
    chats = chats_per_user(conn)
    return LedgerSnapshot(
        config=config,
        period_end=period_end,
        users=kept,
        dropped_users=len(candidates) - len(kept),
        lifetime=lifetime,
        lifetime_labels=[(exported[row.user_id], model_name[row.model_id]) for row in lifetime],
        chats=[chats.get(user.user_id, 0) for user in kept],
        models=enabled_models(conn, now),
        without_pricing=models_without_pricing(conn, now),
        gaps=pricing_gaps(conn, now),
        traffic_gaps=recent_traffic_gaps(conn, active_since),
        unpriced=unpriced_usage_by_model(conn),
    )


class LabelCaches:
    """The collector's rendered label sets, kept between scrapes (see `LabelCache`)."""

    def __init__(self) -> None:
        self.user = LabelCache(["user"])
        self.user_name = LabelCache(["user", "name"])
        self.user_source = LabelCache(["user", "source"])
        self.user_model = LabelCache(["user", "model"])


def _user_families(snapshot: LedgerSnapshot, labels: LabelCaches) -> Iterator[Metric]:
    users = snapshot.users
    user_rows = labels.user.label_rows([(user.username,) for user in users])
    yield RowFamily(names.USER_INFO, "A ledger user and their display name (always 1).", "gauge",
                    labels.user_name.label_rows([(user.username, user.name) for user in users]),
                    [1] * len(users))
    yield RowFamily(names.USER_SPEND_USD,
                    "Priced spend of the user in the current limit period, in USD.", "gauge",
                    user_rows, [user.spent_micros / MICROS_PER_USD for user in users])
    limited = [(user, text) for user, text in zip(users, user_rows.rendered, strict=True)
               if user.limit_micros is not None]
    yield RowFamily(names.USER_LIMIT_USD,
                    "Effective spend limit of the user in USD and where it comes from "
                    "(absent when the user has no limit).", "gauge",
                    labels.user_source.label_rows([(user.username, user.limit_source.value)
                                                   for user, _ in limited]),
                    [(user.limit_micros or 0) / MICROS_PER_USD for user, _ in limited])
    yield RowFamily(names.USER_LIMIT_UTILIZATION_RATIO,
                    "Spend in the current period divided by the effective limit.", "gauge",
                    LabelRows(["user"], [(user.username,) for user, _ in limited],
                              rendered=[text for _, text in limited]),
                    [user.spent_micros / (user.limit_micros or 1) for user, _ in limited])
    yield RowFamily(names.CHATS, "Chats (distinct X-Chat-ID) the user has started.", "counter",
                    user_rows, snapshot.chats)


def _lifetime_families(snapshot: LedgerSnapshot, labels: LabelCaches) -> Iterator[Metric]:
    lifetime = snapshot.lifetime
    user_model = labels.user_model.label_rows(snapshot.lifetime_labels)
    yield RowFamily(names.SPEND_USD, "Priced spend since the ledger began, in USD.", "counter",
                    user_model, [row.cost_micros / MICROS_PER_USD for row in lifetime])
    yield RowFamily(names.TOKENS, "Tokens used, by kind (output includes reasoning).", "counter",
                    user_model.expand("token_type", KIND_NAMES),
                    list(chain.from_iterable(map(_token_counts, lifetime))))
    yield RowFamily(names.MESSAGES, "Answered requests (assistant turns).", "counter",
                    user_model, [row.messages for row in lifetime])
    yield RowFamily(names.FEES, "Per-request fees (web searches) as the providers bill them, "
                    "priced or not.", "counter", user_model.expand("fee", [Fee.WEB_SEARCH.value]),
                    [row.web_searches for row in lifetime])


def _limits_families(snapshot: LedgerSnapshot) -> Iterator[Metric]:
    config = snapshot.config
    yield GaugeMetricFamily(names.LIMITS_ENABLED, "Whether spend limits are enforced (1) or not.",
                            value=1.0 if config.enabled else 0.0)
    default = GaugeMetricFamily(names.LIMITS_DEFAULT_USD,
                                "Default spend limit per user and period in USD "
                                "(absent when there is no default).")
    if config.default_limit_micros is not None:
        default.add_metric([], _usd(config.default_limit_micros))
    yield default
    yield GaugeMetricFamily(names.LIMITS_PERIOD_END_TIMESTAMP_SECONDS,
                            "When the current limit period ends and spend resets (Unix time).",
                            value=snapshot.period_end.timestamp())
    info = GaugeMetricFamily(names.LIMITS_INFO, "The limit period and group policy (always 1).",
                             labels=["period", "group_policy"])
    info.add_metric([config.period.value, config.group_policy.value], 1.0)
    yield info


def _pricing_families(snapshot: LedgerSnapshot) -> Iterator[Metric]:
    yield GaugeMetricFamily(names.MODELS_WITHOUT_PRICING,
                            "Enabled models with no usable pricing plus undeclared models seen "
                            "in traffic: their spend is under-reported.",
                            value=float(len(snapshot.without_pricing)))
    missing = GaugeMetricFamily(names.MODEL_PRICING_MISSING,
                                "A price the model lacks (always 1): a token kind (gap=price), or "
                                "a service tier, tier or fee its recent answers needed.",
                                labels=["model", "token_type", "gap"])
    for gap in snapshot.gaps:
        for kind in gap.missing_kinds:
            missing.add_metric([gap.model, kind.value, names.GAP_PRICE], 1.0)
    for model_name, traffic_gap in snapshot.traffic_gaps:
        missing.add_metric([model_name, "", traffic_gap.value], 1.0)
    yield missing
    prices = GaugeMetricFamily(names.MODEL_PRICE_USD_PER_MILLION_TOKENS,
                               "Price of an enabled model per 1M tokens of a kind, in USD.",
                               labels=["model", "token_type"])
    for model in snapshot.models:
        pricing = model.pricing
        if pricing is None:
            continue
        for kind, price in pricing.items():
            if price is not None:
                prices.add_metric([model.name, kind.value], _usd(price))
    yield prices
    messages = CounterMetricFamily(names.UNPRICED_MESSAGES,
                                   "Messages not fully priced: without a cost (gap=price, the "
                                   "model has no pricing) or at a variant, tier or fee without "
                                   "a price (gap=variant|tier|fee).", labels=["model", "gap"])
    tokens = CounterMetricFamily(names.UNPRICED_TOKENS,
                                 "Tokens of kinds that had no price when they were recorded.",
                                 labels=["model", "token_type"])
    for usage in snapshot.unpriced:
        messages.add_metric([usage.model, names.GAP_PRICE], float(usage.messages))
        for kind_of_gap in GAPS:
            messages.add_metric([usage.model, kind_of_gap.value],
                                float(usage.gap_messages[kind_of_gap]))
        for kind in TOKEN_KINDS:
            tokens.add_metric([usage.model, kind.value], float(usage.tokens.get(kind, 0)))
    yield from (messages, tokens)


def build_families(snapshot: LedgerSnapshot, labels: LabelCaches | None = None
                   ) -> Iterator[Metric]:
    """The ledger's families; `labels` carries rendered label sets over from earlier scrapes."""
    labels = labels if labels is not None else LabelCaches()
    yield from _user_families(snapshot, labels)
    yield from _lifetime_families(snapshot, labels)
    yield from _limits_families(snapshot)
    yield from _pricing_families(snapshot)
    dropped = GaugeMetricFamily(names.SERIES_DROPPED,
                                "Entities left out of the exposition by the series cap.",
                                labels=["collector"])
    dropped.add_metric([COLLECTOR_NAME], float(snapshot.dropped_users))
    yield dropped


class LedgerCollector:
    """Reads the ledger on every scrape through a sync engine (collect() is synchronous)."""

    def __init__(self, engine: Engine, settings: ExporterSettings, *,
                 clock: Clock | None = None) -> None:
        if settings.max_users < 0:
            raise ValueError(f"exporter.max_users must not be negative: {settings.max_users}")
        if settings.active_window_days < 0:
            raise ValueError("exporter.active_window_days must not be negative: "
                             f"{settings.active_window_days}")
        self._engine = engine
        self._settings = settings
        self._clock = clock or _utc_now
        self._labels = LabelCaches()

    @property
    def labels(self) -> LabelCaches:
        """Label sets rendered at the last scrape, kept for the next (exactly its rows)."""
        return self._labels

    def snapshot(self) -> LedgerSnapshot:
        now = as_utc(self._clock())
        active_since = (now - timedelta(days=self._settings.active_window_days)).date()
        with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # Every figure of one scrape from the same snapshot of the ledger.
                conn = conn.execution_options(isolation_level="REPEATABLE READ",
                                              postgresql_readonly=True)
            with conn.begin():
                return read_snapshot(conn, now, active_since=active_since,
                                     max_users=self._settings.max_users)

    def collect(self) -> Iterator[Metric]:
        # Read everything before yielding: a database error must fail the whole collector,
        # not leave half of its families in the exposition.
        families = list(build_families(self.snapshot(), self._labels))
        yield from families
