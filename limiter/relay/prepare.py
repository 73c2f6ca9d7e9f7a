"""Turning an admitted client request into the call its upstream receives.

The path and the query string go upstream byte for byte as the client sent them (RFC 9110
forbids a proxy to change them), except a credential the gateway itself accepts in the query,
which is removed without re-encoding the rest. Headers pass through `limiter.relay.headers`;
the route's dialect may add defaults the client left out, and the upstream's key and fixed
headers win over anything the client sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web

from limiter.admission.credentials import CREDENTIAL_QUERY_PARAMETERS
from limiter.relay.forward import UpstreamCall
from limiter.relay.headers import forwardable_headers
from limiter.relay.registry import Route
from limiter.relay.upstreams import Upstream


def without_query_credentials(raw_query: str) -> str:
    """`raw_query` minus its credential parameters; every other byte kept as it was."""
    if not raw_query or not any(name in raw_query.lower()
                                for name in CREDENTIAL_QUERY_PARAMETERS):
        return raw_query
    return "&".join(part for part in raw_query.split("&")
                    if unquote_plus(part.partition("=")[0]).lower()
                    not in CREDENTIAL_QUERY_PARAMETERS)


def prepare_call(*, route: Route, upstream: Upstream, request: web.Request,
                 body: dict[str, Any], raw_body: bytes,
                 on_sent: Callable[[], None] | None = None) -> UpstreamCall:
    """Everything the call needs, encoded and ready to go out.

    The limiter builds it while its limit check is out, so that admission is followed by one
    write. `raw_body`, the bytes the client sent, is forwarded as is when the dialect needs no
    change to the body (saving a re-encode of large agent contexts) and sizes the input
    estimate; a GET or DELETE that came without a body goes upstream without one.
    """
    path, _, query = request.raw_path.partition("?")
    headers = forwardable_headers(request.headers)
    for name, value in route.dialect.default_headers.items():
        if name not in headers:
            headers[name] = value
    headers.update(upstream.headers)
    payload: bytes | None = None
    if raw_body or route.method == "POST":
        headers["Content-Type"] = "application/json"
        payload = route.dialect.upstream_payload(body, raw_body)
    # else: a GET or DELETE without a body goes upstream without one
    return UpstreamCall(
        upstream=upstream,
        method=route.method,
        url=upstream.url(path, without_query_credentials(query)),
        headers=headers,
        payload=payload,
        stream=route.is_stream(body),
        request_bytes=len(raw_body),
        dialect=route.dialect,
        on_sent=on_sent,
    )
