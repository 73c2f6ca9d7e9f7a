"""Which headers cross the gateway (limiter.relay.headers), how an upstream's key is sent and
which upstream a call goes to."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from ledger.catalog import Model
from limiter.http.errors import ServiceUnavailable
from limiter.metrics import LimiterMetrics
from limiter.relay.headers import forwardable_headers, relayable_headers
from limiter.relay.prepare import without_query_credentials
from limiter.relay.registry import KINDS, ROUTES
from limiter.relay.upstreams import Upstreams, key_headers, upstream_kind
from limiter.settings import LimiterSettings, UpstreamSettings


def test_nothing_of_the_clients_connection_credentials_or_billing_goes_upstream() -> None:
    incoming = CIMultiDict({
        "Host": "limiter", "Authorization": "Bearer client-key", "Content-Length": "10",
        "Connection": "keep-alive, X-Trace", "X-Trace": "1", "Keep-Alive": "timeout=5",
        "Transfer-Encoding": "chunked", "TE": "trailers", "Trailer": "x", "Upgrade": "h2c",
        "Proxy-Authorization": "Basic x", "X-Api-Key": "client-key", "x-goog-api-key": "g",
        "api-key": "azure", "OpenAI-Organization": "org-x", "OpenAI-Project": "proj-x",
        "anthropic-admin-key": "a", "Content-Encoding": "gzip", "Cookie": "c=1",
        "X-Agentmeter-Secret": "s", "X-Forwarded-User": "mallory", "X-Chat-ID": "c1",
        "content-type": "application/json; charset=utf-8", "Accept-Encoding": "br",
        "OpenAI-Beta": "assistants=v2", "User-Agent": "sdk/1", "X-Stainless-Lang": "python",
    })
    assert dict(forwardable_headers(incoming)) == {
        "OpenAI-Beta": "assistants=v2", "User-Agent": "sdk/1", "X-Stainless-Lang": "python",
    }


def test_the_answer_loses_what_its_connection_header_names_cookies_and_framing() -> None:
    upstream = CIMultiDict([
        ("Connection", "keep-alive, X-Internal"), ("X-Internal", "secret-route"),
        ("Set-Cookie", "__cf_bm=1"), ("Content-Encoding", "gzip"), ("Content-Length", "9"),
        ("Server", "cloudflare"), ("Date", "x"), ("x-request-id", "req_1"),
        ("anthropic-ratelimit-tokens-remaining", "5"), ("x-request-id", "req_2"),
    ])
    assert list(relayable_headers(upstream).items()) == [
        ("x-request-id", "req_1"), ("anthropic-ratelimit-tokens-remaining", "5"),
        ("x-request-id", "req_2"),
    ]


@pytest.mark.parametrize(("kind", "expected"), [
    ("openai", {"Authorization": "Bearer sk-up"}),
    ("anthropic", {"x-api-key": "sk-up"}),
    ("google", {"x-goog-api-key": "sk-up"}),
])
def test_each_kind_sends_its_key_its_own_way(kind: str, expected: dict[str, str]) -> None:
    assert set(KINDS) == {"openai", "anthropic", "google"}
    assert key_headers(kind, UpstreamSettings("http://x", api_key="sk-up")) == expected


def test_an_upstream_may_say_how_its_key_is_sent_and_without_a_key_none_is() -> None:
    settings = UpstreamSettings("http://x", api_key="k", key_header="x-api-key")
    assert key_headers("openai", settings) == {"x-api-key": "k"}
    assert key_headers("openai", UpstreamSettings("http://x")) == {}


def test_an_unknown_kind_is_refused_naming_the_setting() -> None:
    assert upstream_kind("azure", UpstreamSettings("http://x", kind="openai")) == "openai"
    with pytest.raises(ValueError, match=r"limiter\.providers\.azure\.kind"):
        upstream_kind("azure", UpstreamSettings("http://x"))


@pytest.mark.parametrize(("query", "expected"), [
    ("", ""),
    ("alt=sse", "alt=sse"),
    ("key=AIza&alt=sse", "alt=sse"),
    ("q=a+b&key=AIza&x=%00%23&KEY=2", "q=a+b&x=%00%23"),
    ("%6Bey=AIza&monkey=1", "monkey=1"),
])
def test_a_query_credential_is_removed_and_nothing_else_changes(query: str,
                                                                expected: str) -> None:
    assert without_query_credentials(query) == expected


def _model(provider: str) -> Model:
    return Model(id=1, name="m", provider=provider, enabled=True, declared=True,
                 max_output_tokens=None)


async def test_a_model_goes_to_the_upstream_its_provider_names_if_it_serves_the_route() -> None:
    settings = LimiterSettings(providers={
        "openai": UpstreamSettings("http://openai.test"),
        "azure": UpstreamSettings("http://azure.test", kind="openai"),
        "anthropic": UpstreamSettings("http://anthropic.test"),
    })
    upstreams = Upstreams(settings, LimiterMetrics(CollectorRegistry(), (), ()))
    chat = next(route for route in ROUTES if route.path == "/v1/chat/completions")
    messages = next(route for route in ROUTES if route.path == "/v1/messages")
    try:
        assert upstreams.for_call(chat, _model("azure")).name == "azure"
        assert upstreams.for_call(chat, _model("openai")).name == "openai"
        assert upstreams.for_call(chat, None).name == "openai"  # the kind's default
        # a provider of another kind does not pull the call onto the wrong dialect
        assert upstreams.for_call(chat, _model("anthropic")).name == "openai"
        assert upstreams.for_call(messages, _model("azure")).name == "anthropic"
    finally:
        await upstreams.close()


async def test_a_kind_without_an_upstream_is_a_503() -> None:
    settings = LimiterSettings(providers={"openai": UpstreamSettings("http://openai.test")})
    upstreams = Upstreams(settings, LimiterMetrics(CollectorRegistry(), (), ()))
    messages = next(route for route in ROUTES if route.path == "/v1/messages")
    try:
        with pytest.raises(ServiceUnavailable, match="No upstream"):
            upstreams.for_call(messages, None)
    finally:
        await upstreams.close()
