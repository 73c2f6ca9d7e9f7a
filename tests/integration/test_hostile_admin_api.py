"""Fuzzing the admin API: whatever the body or query, a clear answer and no half-done change.

Hypothesis generates JSON bodies (plausible fields with hostile values, unknown fields, values of
every JSON type, huge numbers, NaN) and raw bytes for the PUT routes, and query strings for the
cost table. Every answer must be a 2xx or a clean JSON 4xx — never a 5xx, never a traceback —
and a refused request must leave every ledger table exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway import bearer, limiter_settings, policy, seed_ledger
from tests.support.hostile import (
    Answer,
    ThreadedGateway,
    assert_clean_refusal,
    ledger_dump,
    threaded_gateway,
)

ADMIN = {**bearer("admin-token-xyz"), "Content-Type": "application/json"}
# aiohttp's server refuses a request line longer than this with its own 400.
AIOHTTP_MAX_LINE = 8190 - len("GET  HTTP/1.1")
FUZZ = settings(max_examples=50, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**63 - 1, 2**63, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "1", "0.5", "-3", "1e400", "9e99999999", "NaN", "Infinity",
                     "0.0000001", "12.5", "unlimited", "day", "week", "month", "year", "lowest",
                     "highest", "\x00", "9" * 400]),
)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
AMOUNTS = st.one_of(st.integers(min_value=-(2**66), max_value=2**66),
                    st.decimals(allow_nan=False, allow_infinity=False, places=7).map(str),
                    SCALARS)


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """A JSON object made of some of `fields` (plus stray keys), any JSON value, or raw bytes."""
    plausible = st.fixed_dictionaries({}, optional=fields).flatmap(
        lambda body: st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=2).map(
            lambda extra: {**body, **extra} if extra and len(body) % 2 else body))
    as_json = st.one_of(plausible, plausible, JSON_VALUES).map(
        lambda value: json.dumps(value).encode())
    return st.one_of(as_json, as_json, as_json, st.binary(max_size=200),
                     st.sampled_from([b"", b"{", b"{}", b"null", b"[]", b"\xff\xfe{}",
                                      b'{"enabled": tru}', b"[" * 50_000, b'{"a":' * 10_000]))


LIMITS_BODIES = bodies({
    "enabled": st.one_of(st.booleans(), JSON_VALUES),
    "period": st.one_of(st.sampled_from(["day", "week", "month"]), JSON_VALUES),
    "group_policy": st.one_of(st.sampled_from(["lowest", "highest"]), JSON_VALUES),
    "default_limit_micros": AMOUNTS,
    "default_limit_usd": AMOUNTS,
})
USER_BODIES = bodies({"limit_micros": AMOUNTS, "limit_usd": AMOUNTS,
                      "unlimited": st.one_of(st.booleans(), JSON_VALUES)})
GROUP_BODIES = bodies({"limit_micros": AMOUNTS, "limit_usd": AMOUNTS})
NAMES = st.one_of(st.sampled_from(["alice", "bob", "ml", "nobody", "a%2Fb", "..", "x" * 5000]),
                  st.text(min_size=1, max_size=300))
QUERY_VALUES = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "0", "1", "500", "501", "1000000", "1000001", "2026-03-01",
                     "2026-03-14T12:00:00Z", "0001-01-01", "9999-12-31", "0001-01-01T00:00:00Z",
                     "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00",
                     "9999-12-31T23:59:59-14:00", "2026-02-30", "2026-03-14T12:00:00",
                     "\x00", "%", "' OR 1=1 --", "x" * 5000]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)
QUERIES = st.one_of(
    st.dictionaries(st.sampled_from(["from", "to", "q", "page", "per_page", "sort"]),
                    QUERY_VALUES, max_size=5).map(urlencode),
    st.text(max_size=80).map(lambda s: quote(s, safe="=&%")),
)


# -- the gateway ------------------------------------------------------------------------------


@pytest.fixture
def gateway(ledger_url: str, tmp_path: Path) -> Iterator[tuple[ThreadedGateway, str]]:
    """One real limiter per test function (shared by its examples) on a seeded ledger."""
    seed_ledger(ledger_url, policy(groups=[{"name": "ml", "members": ["alice", "bob"]}]))
    settings_ = limiter_settings(tmp_path, "http://127.0.0.1:9")
    with threaded_gateway(settings_, ledger_url) as started:
        yield started, ledger_url


def check(gateway: tuple[ThreadedGateway, str], method: str, path: str,
          body: bytes | None = None) -> Answer:
    """Send as the admin; a 2xx is JSON, anything else a clean 4xx that changed nothing."""
    served, url = gateway
    before = ledger_dump(url)
    answer = served.request(method, path, body, ADMIN)
    assert answer.status < 500, (method, path, body, answer.status, answer.body[:500])
    if answer.status < 300:
        assert isinstance(answer.json(), dict)
        return answer
    if len(path) > AIOHTTP_MAX_LINE:
        # aiohttp's own parser refuses the request line (plain text), before any handler.
        assert answer.status == 400 and b"Traceback" not in answer.body, answer
    else:
        assert_clean_refusal(answer)
    assert ledger_dump(url) == before, (method, path, body)
    return answer


# -- the tests --------------------------------------------------------------------------------


def test_put_limits_fuzzed(gateway: tuple[ThreadedGateway, str]) -> None:
    @FUZZ
    @given(body=LIMITS_BODIES)
    def run(body: bytes) -> None:
        check(gateway, "PUT", "/api/v1/limits", body)

    run()


def test_put_user_limit_fuzzed(gateway: tuple[ThreadedGateway, str]) -> None:
    @FUZZ
    @given(name=NAMES, body=USER_BODIES)
    def run(name: str, body: bytes) -> None:
        check(gateway, "PUT", f"/api/v1/limits/users/{quote(name, safe='')}", body)

    run()


def test_put_group_limit_fuzzed(gateway: tuple[ThreadedGateway, str]) -> None:
    @FUZZ
    @given(name=NAMES, body=GROUP_BODIES)
    def run(name: str, body: bytes) -> None:
        check(gateway, "PUT", f"/api/v1/limits/groups/{quote(name, safe='')}", body)

    run()


def test_usage_users_query_fuzzed(gateway: tuple[ThreadedGateway, str]) -> None:
    @FUZZ
    @given(query=QUERIES)
    def run(query: str) -> None:
        answer = check(gateway, "GET", f"/api/v1/usage/users?{query}")
        if answer.status == 200:
            page = answer.json()
            assert 1 <= page["per_page"] <= 500 and page["page"] >= 1

    run()


def test_usage_user_detail_fuzzed(gateway: tuple[ThreadedGateway, str]) -> None:
    @FUZZ
    @given(name=NAMES, query=QUERIES)
    def run(name: str, query: str) -> None:
        check(gateway, "GET", f"/api/v1/usage/users/{quote(name, safe='')}?{query}")

    run()


@pytest.mark.parametrize("route", ["/api/v1/limits", "/api/v1/limits/users/alice",
                                   "/api/v1/limits/groups/ml"])
def test_known_hostile_bodies_are_refused_without_a_change(
        gateway: tuple[ThreadedGateway, str], route: str) -> None:
    """The examples fuzzing found or that matter most, kept explicit."""
    for body in (b"{", b"[]", b"\xff", b"[" * 50_000, json.dumps({"limit_micros": 2**64}).encode(),
                 json.dumps({"default_limit_micros": 2**64}).encode(),
                 json.dumps({"limit_usd": "1e400"}).encode(),
                 json.dumps({"default_limit_usd": "NaN"}).encode(),
                 json.dumps({"limit_usd": 10**30}).encode(),
                 json.dumps({"limit_usd": "9e99999999"}).encode(),
                 json.dumps({"default_limit_usd": "-1e999999"}).encode(),
                 json.dumps({"limit_micros": -5}).encode(), b'{"limit_micros": 1' + b"0" * 5000
                 + b"}"):
        answer = check(gateway, "PUT", route, body)
        assert 400 <= answer.status < 500, (route, body[:80], answer.body)


@pytest.mark.parametrize("query", [
    "to=0001-01-01", "from=0001-01-01T00:00:00%2B14:00", "to=9999-12-31T23:59:59-14:00",
    "from=0001-01-01&to=9999-12-31", "page=0", "per_page=501", "page=99999999999999999999",
    "q=%00", "q=" + "x" * 5000, "from=2026-02-30",
])
@pytest.mark.parametrize("route", ["/api/v1/usage/users", "/api/v1/usage/users/alice"])
def test_known_hostile_queries_get_a_clean_answer(
        gateway: tuple[ThreadedGateway, str], route: str, query: str) -> None:
    """Dates at the ends of the calendar were 500s (OverflowError) before; NUL a 503."""
    check(gateway, "GET", f"{route}?{query}")


def test_names_the_ledger_cannot_store_are_refused(gateway: tuple[ThreadedGateway, str]) -> None:
    """A NUL byte in a path name was answered 503 "ledger unavailable" on PostgreSQL."""
    for route in ("/api/v1/limits/users/", "/api/v1/limits/groups/"):
        for name in ("%00", "a%00b", "x" * 2000):
            answer = check(gateway, "PUT", route + name, b'{"limit_micros": 5}')
            assert answer.status in (400, 404), answer
        answer = check(gateway, "DELETE", route + "%00")
        assert answer.status in (400, 404), answer
