"""Egress through the proxy the environment names (HTTP_PROXY / HTTPS_PROXY, NO_PROXY).

The upstream's base URL names a host that does not resolve; the fake provider stands in as the
proxy. A call that reaches it went through the proxy; one that honours NO_PROXY tries the host
itself and fails with the gateway's upstream error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.fake_upstream import Answer, FakeUpstream
from tests.support.forward_harness import CLIENT_KEY, OPENAI_KEY, Harness

UNRESOLVABLE = "http://provider.invalid:8443"
BODY = json.dumps({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {CLIENT_KEY}",
                                              "Content-Type": "application/json"}) as session:
        yield session


async def test_calls_go_through_the_proxy_the_environment_names(
        upstream: FakeUpstream, client: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", upstream.base_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    upstream.queue(Answer(text="via the proxy"))
    async with (Harness(UNRESOLVABLE) as harness,
                client.post(harness.url + "/v1/chat/completions", data=BODY) as response):
        assert response.status == 200
        assert "via the proxy" in await response.text()
    received = upstream.received[-1]
    # An HTTP proxy is asked for the absolute URL; the Host is the provider's, not the proxy's.
    assert received.headers["Host"] == "provider.invalid:8443"
    assert received.path == "/v1/chat/completions"
    assert received.headers["Authorization"] == f"Bearer {OPENAI_KEY}"


async def test_no_proxy_sends_the_call_to_the_host_itself(
        upstream: FakeUpstream, client: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", upstream.base_url)
    monkeypatch.setenv("NO_PROXY", "provider.invalid")
    async with (Harness(UNRESOLVABLE) as harness,
                client.post(harness.url + "/v1/chat/completions", data=BODY) as response):
        assert response.status == 502
        body = await response.json()
    assert body["error"]["code"] == "upstream_error"
    assert upstream.received == []
