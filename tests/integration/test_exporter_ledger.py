"""The ledger collector against real ledgers (SQLite and PostgreSQL): every value, to the micro.

The ledger is seeded through its own functions (the policy file, `record_usage`); the expected
figures are summed from what `record_usage` answered, then compared with the scraped registry.
The seeding helpers live in tests/support/exporter_seed.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import build_registry
from exporter.exposition import render
from exporter.ledger_collector import LedgerCollector
from exporter.settings import ExporterSettings
from ledger import metric_names
from ledger.engine import create_sync_engine
from ledger.policy_apply import apply_policy
from ledger.policy_file import parse_policy
from ledger.settings import DatabaseSettings
from ledger.spend import limit_status
from ledger.tokens import TOKEN_KINDS, TokenUsage
from ledger.usage import UsageRecord, record_usage
from ledger.users import get_user
from tests.support.exporter_seed import (
    MONTH_END,
    NOW,
    ODD_USERNAMES,
    POLICY,
    read,
    record,
    seed,
    seed_odd_users,
    value,
)


@pytest.fixture
def scrape() -> Iterator[object]:
    """`scrape(url, **settings)` -> a registry read from a fresh exporter, closed afterwards."""
    closers = []

    def make(url: str, clock: datetime = NOW, **settings: object) -> CollectorRegistry:
        registry, close = build_registry(ExporterSettings(**settings),  # type: ignore[arg-type]
                                         DatabaseSettings(url=url), clock=lambda: clock)
        closers.append(close)
        return registry

    yield make
    for close in closers:
        close()


def test_every_value_matches_the_ledger(ledger_url: str, scrape) -> None:  # type: ignore[no-untyped-def]
    expected = seed(ledger_url)
    registry = scrape(ledger_url)
    samples = read(registry)
    assert value(samples, "agentmeter_collector_success", collector="ledger") == 1.0

    # Current period: spend, limit with its source, utilization; compared with the ledger's own
    # limit check as the limiter would do it.
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.connect() as conn:
        statuses = {name: limit_status(conn, get_user(conn, name).id, NOW)
                    for name in ("alice", "bob", "carol", "dave", "erin")}
    engine.dispose()
    limits = {"alice": (500_000_000, "user"), "bob": (200_000_000, "group"),
              "dave": (50_000_000, "default"), "erin": (50_000_000, "default")}
    for name, status in statuses.items():
        assert status.spent_micros == expected.period_spend[name]
        assert value(samples, "agentmeter_user_spend_usd", user=name) == \
            status.spent_micros / 1_000_000
        if name in limits:
            micros, source = limits[name]
            assert (status.limit_micros, status.limit_source.value) == (micros, source)
            assert value(samples, "agentmeter_user_limit_usd", user=name, source=source) == \
                micros / 1_000_000
            assert value(samples, "agentmeter_user_limit_utilization_ratio", user=name) == \
                status.spent_micros / micros
        else:
            assert status.limit_micros is None
    # carol is exempt: no limit series at all, but she is active so her spend is there.
    text = generate_latest(registry).decode()
    assert 'agentmeter_user_limit_usd{source="user",user="carol"}' not in text
    assert 'agentmeter_user_limit_utilization_ratio{user="carol"}' not in text
    assert value(samples, "agentmeter_user_info", user="alice", name="Alice Liddell") == 1.0
    assert value(samples, "agentmeter_user_info", user="bob", name='Bob "the builder"') == 1.0
    # Hand-checked figures: 11535 micros, plus 10 input (30) and 10 cache reads at 0.3 (3).
    assert value(samples, "agentmeter_user_spend_usd", user="alice") == 0.011568
    assert value(samples, "agentmeter_user_spend_usd", user="bob") == 1.25

    # Lifetime counters, to the micro.
    for (user, model), micros in expected.spend.items():
        assert value(samples, "agentmeter_spend_usd_total", user=user, model=model) == \
            micros / 1_000_000
        assert value(samples, "agentmeter_messages_total", user=user, model=model) == \
            expected.messages[user, model]
        for kind in TOKEN_KINDS:
            assert value(samples, "agentmeter_tokens_total", user=user, model=model,
                         token_type=kind.value) == expected.tokens[user, model, kind.value]
    assert value(samples, "agentmeter_spend_usd_total", user="alice", model="gpt-5") == 0.000039
    for user in ("alice", "bob", "carol", "dave", "erin"):
        assert value(samples, "agentmeter_chats_total", user=user) == len(expected.chats[user])
    assert value(samples, "agentmeter_chats_total", user="alice") == 2

    # Limits state.
    assert value(samples, "agentmeter_limits_enabled") == 1.0
    assert value(samples, "agentmeter_limits_default_usd") == 50.0
    assert value(samples, "agentmeter_limits_period_end_timestamp_seconds") == \
        MONTH_END.timestamp()
    assert value(samples, "agentmeter_limits_info", period="month", group_policy="lowest") == 1.0

    # Pricing: free-model (enabled, no pricing) and mystery-model (seen, undeclared).
    assert value(samples, "agentmeter_models_without_pricing") == 2.0
    for kind in TOKEN_KINDS:
        for model in ("free-model", "mystery-model"):
            assert value(samples, "agentmeter_model_pricing_missing", model=model,
                         token_type=kind.value, gap="price") == 1.0
    for missing in ("cache_write", "cache_write_1h"):
        assert value(samples, "agentmeter_model_pricing_missing", model="gpt-5",
                     token_type=missing, gap="price") == 1.0
    assert value(samples, "agentmeter_model_pricing_missing", model="gpt-5",
                 token_type="input", gap="price") is None
    assert value(samples, "agentmeter_model_pricing_missing", model="retired-model",
                 token_type="input", gap="price") is None
    prices = {("claude-sonnet-4-5", "input"): 3.0, ("claude-sonnet-4-5", "output"): 15.0,
              ("claude-sonnet-4-5", "cache_read"): 0.3, ("claude-sonnet-4-5", "cache_write"): 3.75,
              ("claude-sonnet-4-5", "cache_write_1h"): 6.0, ("gpt-5", "input"): 1.25,
              ("gpt-5", "output"): 10.0, ("gpt-5", "cache_read"): 0.125}
    exported_prices = {
        (s.labels["model"], s.labels["token_type"]): s.value
        for f in registry.collect() if f.name == metric_names.MODEL_PRICE_USD_PER_MILLION_TOKENS
        for s in f.samples}
    assert exported_prices == prices

    # Unpriced messages and tokens per model; every enabled model at 0 from the start.
    price = {"gap": "price"}
    assert value(samples, "agentmeter_unpriced_messages_total", model="free-model", **price) == 1
    assert value(samples, "agentmeter_unpriced_messages_total", model="mystery-model",
                 **price) == 1.0
    assert value(samples, "agentmeter_unpriced_messages_total", model="gpt-5", **price) == 0.0
    for gap in ("price", "variant", "tier", "fee"):
        assert value(samples, "agentmeter_unpriced_messages_total", model="claude-sonnet-4-5",
                     gap=gap) == 0.0
    # No answer reported a fee yet: every (user, model) at 0.
    for user, model in expected.messages:
        assert value(samples, "agentmeter_fees_total", user=user, model=model,
                     fee="web_search") == 0.0
    assert expected.unpriced_messages == {"free-model": 1, "mystery-model": 1}
    unpriced_tokens = {("free-model", "input"): 100, ("free-model", "output"): 200,
                       ("mystery-model", "input"): 5, ("gpt-5", "cache_write"): 50}
    for model in ("free-model", "mystery-model", "gpt-5", "claude-sonnet-4-5"):
        for kind in TOKEN_KINDS:
            assert value(samples, "agentmeter_unpriced_tokens_total", model=model,
                         token_type=kind.value) == unpriced_tokens.get((model, kind.value), 0)

    assert value(samples, "agentmeter_series_dropped", collector="ledger") == 0.0
    # Every name on the page is declared in the one place dashboards and alerts read.
    families = text_string_to_metric_families(text)
    exposed = {s.name for f in families for s in f.samples}
    assert exposed <= metric_names.exposed_names()


def test_fees_and_the_pricing_gaps_answers_reveal(ledger_url: str, scrape) -> None:  # type: ignore[no-untyped-def]
    seed(ledger_url)
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.begin() as conn:
        alice = get_user(conn, "alice").id
        for n, (model, billing) in enumerate([
                ("claude-sonnet-4-5", {"web_searches": 4}),  # no web-search price: a fee gap
                ("gpt-5", {"service_tier": "scale"}),  # a tier gpt-5 has no price for
                ("gpt-5", {"service_tier": "default", "web_searches": 0})]):
            record_usage(conn, UsageRecord(
                id=f"gap-{n}", user_id=alice, model=model, provider="openai",
                usage=TokenUsage(input=10, output=10), created_at=NOW - timedelta(minutes=1),
                **billing))  # type: ignore[arg-type]
    engine.dispose()
    samples = read(scrape(ledger_url))
    assert value(samples, "agentmeter_fees_total", user="alice", model="claude-sonnet-4-5",
                 fee="web_search") == 4.0
    assert value(samples, "agentmeter_model_pricing_missing", model="claude-sonnet-4-5",
                 token_type="", gap="fee") == 1.0
    assert value(samples, "agentmeter_model_pricing_missing", model="gpt-5", token_type="",
                 gap="variant") == 1.0
    assert value(samples, "agentmeter_model_pricing_missing", model="gpt-5", token_type="",
                 gap="fee") is None
    assert value(samples, "agentmeter_unpriced_messages_total", model="gpt-5",
                 gap="variant") == 1.0
    assert value(samples, "agentmeter_unpriced_messages_total", model="claude-sonnet-4-5",
                 gap="fee") == 1.0
    # A gap leaves the gauge once no recent answer shows it; the counters keep their count.
    later = read(scrape(ledger_url, clock=NOW + timedelta(days=60)))
    assert value(later, "agentmeter_model_pricing_missing", model="gpt-5", token_type="",
                 gap="variant") is None
    assert value(later, "agentmeter_unpriced_messages_total", model="gpt-5", gap="variant") == 1


def test_counters_survive_an_exporter_restart(ledger_url: str, scrape) -> None:  # type: ignore[no-untyped-def]
    seed(ledger_url)
    bob_gpt = {"user": "bob", "model": "gpt-5"}
    before = value(read(scrape(ledger_url)), "agentmeter_spend_usd_total", **bob_gpt)
    # A new exporter process: the counters come from the ledger, not from memory.
    again = scrape(ledger_url)
    assert value(read(again), "agentmeter_spend_usd_total", **bob_gpt) == before == 1.25
    record(ledger_url, [("bob", "gpt-5", TokenUsage(output=100), NOW, None)])
    assert value(read(again), "agentmeter_spend_usd_total", user="bob", model="gpt-5") == 1.251
    assert value(read(again), "agentmeter_messages_total", user="bob", model="gpt-5") == 2.0


def test_known_label_sets_are_exported_at_zero_before_any_traffic(
        ledger_url: str, scrape) -> None:  # type: ignore[no-untyped-def]
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.begin() as conn:
        apply_policy(conn, parse_policy(POLICY.replace("default_limit_usd: 50",
                                                       "default_limit_usd: null")))
    engine.dispose()
    registry = read(scrape(ledger_url))
    for model in ("claude-sonnet-4-5", "gpt-5", "free-model"):
        for gap in ("price", "variant", "tier", "fee"):
            assert value(registry, "agentmeter_unpriced_messages_total", model=model,
                         gap=gap) == 0.0
        for kind in TOKEN_KINDS:
            assert value(registry, "agentmeter_unpriced_tokens_total", model=model,
                         token_type=kind.value) == 0.0
    assert value(registry, "agentmeter_unpriced_messages_total", model="retired-model",
                 gap="price") is None
    assert value(registry, "agentmeter_series_dropped", collector="ledger") == 0.0
    assert value(registry, "agentmeter_models_without_pricing") == 1.0
    # No default limit: the gauge is absent rather than a misleading 0.
    assert value(registry, "agentmeter_limits_default_usd") is None
    # Users with a limit are exported before they spend anything; dave (no limit, no spend) not.
    assert value(registry, "agentmeter_user_spend_usd", user="alice") == 0.0
    assert value(registry, "agentmeter_user_limit_utilization_ratio", user="alice") == 0.0
    assert value(registry, "agentmeter_chats_total", user="alice") == 0.0
    assert value(registry, "agentmeter_user_spend_usd", user="bob") == 0.0
    assert value(registry, "agentmeter_user_spend_usd", user="dave") is None


def test_only_active_users_up_to_the_cap(ledger_url: str, scrape) -> None:  # type: ignore[no-untyped-def]
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    with engine.begin() as conn:
        apply_policy(conn, parse_policy(POLICY.replace("enabled: true", "enabled: false", 1)))
    engine.dispose()
    usage = TokenUsage(input=1000)
    record(ledger_url, [
        ("recent-big", "gpt-5", TokenUsage(input=3000), NOW - timedelta(days=1), None),
        ("recent-small", "gpt-5", usage, NOW - timedelta(days=1), None),
        ("edge-of-window", "gpt-5", usage, NOW - timedelta(days=10), None),
        ("long-ago", "gpt-5", usage, NOW - timedelta(days=60), None),
    ])
    registry = read(scrape(ledger_url, active_window_days=30))
    assert value(registry, "agentmeter_limits_enabled") == 0.0
    for user in ("recent-big", "recent-small", "edge-of-window"):
        assert value(registry, "agentmeter_user_info", user=user, name="") == 1.0
    assert value(registry, "agentmeter_user_limit_usd", user="alice", source="user") is None
    for name in ("agentmeter_user_spend_usd", "agentmeter_chats_total"):
        assert value(registry, name, user="long-ago") is None
        assert value(registry, name, user="alice") is None  # limits disabled: no limit, no spend
    assert value(registry, "agentmeter_spend_usd_total", user="long-ago", model="gpt-5") is None
    assert value(registry, "agentmeter_series_dropped", collector="ledger") == 0.0

    capped = read(scrape(ledger_url, active_window_days=30, max_users=1))
    assert value(capped, "agentmeter_series_dropped", collector="ledger") == 2.0
    assert value(capped, "agentmeter_user_spend_usd", user="recent-big") == 0.00375
    assert value(capped, "agentmeter_spend_usd_total", user="recent-big", model="gpt-5") == \
        0.00375
    for user in ("recent-small", "edge-of-window"):
        assert value(capped, "agentmeter_user_spend_usd", user=user) is None
        assert value(capped, "agentmeter_spend_usd_total", user=user, model="gpt-5") is None
    # Per-model figures are not per user and are never cut.
    assert value(capped, "agentmeter_unpriced_messages_total", model="gpt-5",
                 gap="price") == 0.0


def test_odd_usernames_give_a_valid_exposition(ledger_url: str, scrape) -> None:  # type: ignore[no-untyped-def]
    seed_odd_users(ledger_url)
    registry = scrape(ledger_url)
    for encoded, parse in ((generate_latest(registry), text_string_to_metric_families),
                           (generate_openmetrics(registry), parse_openmetrics)):
        families = {f.name: f for f in parse(encoded.decode("utf-8"))}
        spend = {s.labels["user"]: s.value for s in families["agentmeter_user_spend_usd"].samples}
        for i, name in enumerate(ODD_USERNAMES):
            assert spend[name] == (1000 + i) * 3 / 1_000_000
        tokens = families["agentmeter_tokens"].samples
        assert {s.labels["user"] for s in tokens} >= set(ODD_USERNAMES)


def test_label_sets_kept_between_scrapes_follow_the_ledger(ledger_url: str) -> None:
    """The collector keeps rendered label sets from one scrape to the next; a user who joins is
    escaped and shown, one who leaves the export is forgotten, and values never come from it."""
    expected = seed(ledger_url, POLICY.replace("enabled: true", "enabled: false", 1))
    moments = [NOW]
    engine = create_sync_engine(DatabaseSettings(url=ledger_url))
    collector = LedgerCollector(engine, ExporterSettings(active_window_days=30),
                                clock=lambda: moments[-1])
    registry = CollectorRegistry()
    registry.register(collector)

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        body, _ = render(registry, "")
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(body.decode("utf-8")) for s in f.samples}

    def exported_users(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
        return {dict(labels)["user"] for name, labels in samples
                if name == "agentmeter_user_spend_usd"}

    try:
        first = scrape()
        # Limits are off: only the users with recent traffic, each with their own models.
        assert exported_users(first) == {"alice", "bob", "carol"}
        assert len(collector.labels.user) == 3
        assert len(collector.labels.user_model) == len(expected.spend) == 5

        record(ledger_url, [('new"comer', "gpt-5", TokenUsage(input=8), NOW, "n-1")], expected)
        second = scrape()
        assert exported_users(second) == {"alice", "bob", "carol", 'new"comer'}
        for (user, model), micros in expected.spend.items():
            assert value(second, "agentmeter_spend_usd_total", user=user, model=model) == \
                micros / 1_000_000
            assert value(second, "agentmeter_tokens_total", user=user, model=model,
                         token_type="input") == expected.tokens[user, model, "input"]
        assert value(second, "agentmeter_chats_total", user='new"comer') == 1.0
        assert value(second, "agentmeter_chats_total", user="alice") == 2.0

        # Forty days on nobody is active: nothing exported and nothing kept.
        moments.append(NOW + timedelta(days=40))
        later = scrape()
        assert exported_users(later) == set()
        assert not any(name == "agentmeter_spend_usd_total" for name, _ in later)
        assert len(collector.labels.user) == len(collector.labels.user_model) == 0
        assert len(collector.labels.user_name) == 0

        moments.append(NOW)
        assert scrape() == second
    finally:
        engine.dispose()
