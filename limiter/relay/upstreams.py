"""The configured upstreams, each with its own aiohttp `ClientSession`, and the choice of one.

Every upstream gets one long-lived session: the proxy the environment names for its base URL
(HTTPS_PROXY, HTTP_PROXY and NO_PROXY, read once when the session is made, with aiohttp's own
rules), the system CA bundle or a CA file of its own, a connector whose
connection limit is the upstream's `max_connections`, no cookie jar (a cookie a provider sets on
one user's answer must not ride along on anybody's next call) and automatic decompression of
answers (the relay drops their Content-Encoding). Time a call spends waiting for a free
connection is observed in the connection-wait histogram.

The proxy is resolved once rather than with aiohttp's `trust_env=True`, which looks it up (and
reads ~/.netrc) in a worker thread on every call: two thread hand-offs per provider call, measured
in `bench.limiter` as most of the relay's own cost. A process's environment does not change while
it runs, so the answer is the same; netrc credentials are not wanted either, since the upstream's
key is the only credential a call carries.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
from aiohttp.helpers import BasicAuth, get_env_proxy_for_url
from yarl import URL

from ledger.catalog import Model
from limiter.http.errors import ServiceUnavailable
from limiter.metrics import LimiterMetrics
from limiter.relay.registry import KINDS, Route, default_upstream_name
from limiter.settings import LimiterSettings, UpstreamSettings


def upstream_kind(name: str, settings: UpstreamSettings) -> str:
    """The kind of the upstream `name`; ValueError (naming the setting) for an unknown one."""
    kind = settings.kind or name
    if kind not in KINDS:
        raise ValueError(f"limiter.providers.{name}.kind: unknown upstream kind {kind!r} "
                         f"(known: {', '.join(KINDS)})")
    return kind


def key_headers(kind: str, settings: UpstreamSettings) -> dict[str, str]:
    """The header carrying the upstream's key, as its settings or its kind say to send it."""
    if not settings.api_key:
        return {}
    how = settings.key_header or KINDS[kind].key_header
    if how == "bearer":
        return {"Authorization": f"Bearer {settings.api_key}"}
    return {how: settings.api_key}


@dataclass(frozen=True, slots=True)
class Upstream:
    """One configured upstream, ready for calls."""

    name: str
    kind: str
    # The base URL as configured, without a trailing slash; the client's path is appended.
    base: str
    # Its key header and fixed headers, added to every call (they win over the client's).
    headers: Mapping[str, str]
    session: aiohttp.ClientSession

    def url(self, raw_path: str, raw_query: str) -> URL:
        """The upstream URL for a client's path and query, both kept byte for byte."""
        target = self.base + raw_path + (f"?{raw_query}" if raw_query else "")
        return URL(target, encoded=True)


def env_proxy(base_url: str) -> tuple[URL | None, BasicAuth | None]:
    """The proxy (and its credentials) the environment names for calls to `base_url`, or none."""
    try:
        return get_env_proxy_for_url(URL(base_url))
    except LookupError:
        return None, None


def _connection_wait_tracing(observe: aiohttp.TraceConfig, metrics: LimiterMetrics,
                             name: str) -> None:
    histogram = metrics.connection_wait_by(name)

    async def queued(session: aiohttp.ClientSession, context: SimpleNamespace,
                     params: aiohttp.TraceConnectionQueuedStartParams) -> None:
        context.queued_at = time.perf_counter()

    async def dequeued(session: aiohttp.ClientSession, context: SimpleNamespace,
                       params: aiohttp.TraceConnectionQueuedEndParams) -> None:
        started = getattr(context, "queued_at", None)
        if started is not None:
            histogram.observe(time.perf_counter() - started)

    observe.on_connection_queued_start.append(queued)
    observe.on_connection_queued_end.append(dequeued)


def _session(name: str, settings: UpstreamSettings, limiter: LimiterSettings,
             metrics: LimiterMetrics) -> aiohttp.ClientSession:
    ssl_context: ssl.SSLContext | bool = True
    if settings.ca_file:
        ssl_context = ssl.create_default_context(cafile=settings.ca_file)
    connector = aiohttp.TCPConnector(limit=settings.max_connections, limit_per_host=0,
                                     ssl=ssl_context)
    tracing = aiohttp.TraceConfig()
    _connection_wait_tracing(tracing, metrics, name)
    default = limiter.upstream_timeout_seconds
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.connect_timeout_seconds or default,
        sock_read=settings.read_timeout_seconds or default)
    proxy, proxy_auth = env_proxy(settings.base_url)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, proxy=proxy, proxy_auth=proxy_auth,
        cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True, trace_configs=[tracing])


class Upstreams:
    """Every configured upstream, by name; `close` ends their sessions."""

    def __init__(self, limiter: LimiterSettings, metrics: LimiterMetrics) -> None:
        kinds = {name: upstream_kind(name, s) for name, s in limiter.providers.items()}
        self._kinds = kinds
        self.by_name: dict[str, Upstream] = {}
        for name, settings in limiter.providers.items():
            kind = kinds[name]
            headers = {**settings.headers, **key_headers(kind, settings)}
            self.by_name[name] = Upstream(
                name=name, kind=kind, base=settings.base_url.rstrip("/"), headers=headers,
                session=_session(name, settings, limiter, metrics))
        self._defaults = {kind: default_upstream_name(kind, kinds) for kind in KINDS}

    def for_call(self, route: Route, model: Model | None) -> Upstream:
        """The upstream the model's `provider` names if it serves the route's kind, else the
        kind's default; 503 when none is configured."""
        if model is not None:
            named = self.by_name.get(model.provider)
            if named is not None and named.kind == route.kind:
                return named
        default = self._defaults.get(route.kind)
        if default is None:
            raise ServiceUnavailable(f"No upstream is configured for {route.path}.",
                                     code="provider_not_configured")
        return self.by_name[default]

    def label_for(self, route: Route) -> str:
        """The `provider` label of a call that fails before its model is known."""
        return self._defaults.get(route.kind) or route.kind

    async def close(self) -> None:
        for upstream in self.by_name.values():
            await upstream.session.close()
