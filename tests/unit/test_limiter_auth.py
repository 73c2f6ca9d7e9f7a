"""Reading credentials from requests, and the identities remembered for fail-open."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from limiter.admission.credentials import (
    Credential,
    credential_of,
    is_admin,
    presented_token,
    trusted_user,
)
from limiter.admission.identity import FallbackIdentities, Identity
from limiter.http.errors import BadRequest, LimitExceeded, Unauthorized
from limiter.settings import LimiterSettings
from limiter.timefmt import parse_instant, rfc3339


def request(**headers: str) -> Any:
    return make_mocked_request("POST", "/v1/messages",
                               headers={k.replace("_", "-"): v for k, v in headers.items()})


@pytest.mark.parametrize(("headers", "token"), [
    ({"Authorization": "Bearer am-1"}, "am-1"),
    ({"Authorization": "bearer   am-1 "}, "am-1"),
    ({"x_api_key": "am-2"}, "am-2"),
    ({"Authorization": "Bearer am-1", "x_api_key": "am-2"}, "am-1"),
    ({"Authorization": "Basic abc"}, None),
    ({"Authorization": "Bearer "}, None),
    ({}, None),
])
def test_presented_token(headers: dict[str, str], token: str | None) -> None:
    assert presented_token(request(**headers)) == token


def test_trusted_header_needs_the_configured_secret() -> None:
    settings = LimiterSettings(trusted_header_secret="s3cret")
    good = request(X_Forwarded_User="carol", X_Agentmeter_Secret="s3cret")
    assert trusted_user(good, settings) == "carol"
    assert credential_of(good, settings) == Credential("trusted", "carol")
    for bad in (request(X_Forwarded_User="carol", X_Agentmeter_Secret="wrong"),
                request(X_Forwarded_User="carol"),
                request(X_Agentmeter_Secret="s3cret")):
        assert trusted_user(bad, settings) is None
    # Without a configured secret the header means nothing.
    assert trusted_user(good, LimiterSettings()) is None
    # Ignored headers fall back to the key, and without a key that is a 401.
    with pytest.raises(Unauthorized):
        credential_of(request(X_Forwarded_User="carol", X_Agentmeter_Secret="no"), settings)
    fallback = request(X_Forwarded_User="carol", X_Agentmeter_Secret="no",
                       Authorization="Bearer am-9")
    assert credential_of(fallback, settings) == Credential("key", "am-9")


def test_admin_token() -> None:
    settings = LimiterSettings(admin_token="tok")
    assert is_admin(request(Authorization="Bearer tok"), settings)
    assert is_admin(request(x_api_key="tok"), settings)
    assert not is_admin(request(Authorization="Bearer tok2"), settings)
    assert not is_admin(request(), settings)
    assert not is_admin(request(Authorization="Bearer tok"), LimiterSettings())


def test_a_credential_never_shows_its_secret() -> None:
    credential = Credential("key", "am-very-secret")
    assert "am-very-secret" not in repr(credential)
    assert "am-very-secret" not in credential.fingerprint


def test_fallback_identities_expire_and_are_bounded() -> None:
    now = [0.0]
    cache = FallbackIdentities(lambda: now[0], ttl_seconds=10, max_entries=2)
    a, b, c = (Credential("key", k) for k in "abc")
    cache.remember(a, Identity(1, "alice"))
    assert cache.recall(a) == Identity(1, "alice")
    assert cache.recall(Credential("trusted", "a")) is None
    cache.remember(b, Identity(2, "bob"))
    cache.remember(c, Identity(3, "carol"))
    assert cache.recall(a) is None  # the oldest went first
    now[0] = 11
    assert cache.recall(c) is None


def test_limit_exceeded_answer() -> None:
    error = LimitExceeded({"message": "Chat usage limit exceeded.", "spent_micros": 5})
    assert error.status == 409
    assert error.headers == {"x-should-retry": "false"}
    assert error.body() == {"message": "Chat usage limit exceeded.", "spent_micros": 5,
                            "error": {"code": "limit_exceeded",
                                      "message": "Chat usage limit exceeded."}}
    restored = LimitExceeded({"message": "m"}, status=403, retry_after_seconds=42)
    assert restored.status == 403
    assert restored.headers == {"Retry-After": "42", "x-should-retry": "false"}


def test_rfc3339() -> None:
    moment = parse_instant("2026-03-14T12:00:00+01:00", "from")
    assert rfc3339(moment) == "2026-03-14T11:00:00Z"
    assert rfc3339(parse_instant("2026-03-14", "from")) == "2026-03-14T00:00:00Z"
    assert rfc3339(parse_instant("2026-03-14T00:00:00.5Z", "to")) == "2026-03-14T00:00:00.500000Z"
    for bad in ("2026-03-14T12:00:00", "tomorrow", "2026-13-01"):
        with pytest.raises(BadRequest, match=r"RFC 3339|timezone"):
            parse_instant(bad, "from")
