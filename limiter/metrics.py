"""The limiter's own Prometheus metrics, registered on a registry the caller owns.

Names come from `ledger.metric_names` (the contract dashboards and alerts use). Label sets that
will exist are created at 0 up front, so `rate()` and alerts work before the first event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from ledger import metric_names as names

# Why the limit check failed and the request went through anyway (fail_mode: open).
FAIL_OPEN_REASONS = ("database_error", "timeout")
# Where a key check's answer came from (limiter.admission.check_cache).
KEY_CHECK_SOURCES = ("cache", "ledger")
# Which part of a request a client was too slow to send: the head (limiter.http.connection) or
# the body (limiter.relay.body).
CLIENT_TIMEOUT_PHASES = ("head", "body")

# Request latencies: agent requests run from milliseconds (409s) to minutes (long streams).
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Waits for a free upstream connection: none at all until a connection limit is reached.
_CONNECTION_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60)
# Overhead the limiter adds: the bench target is p50 <= 1 ms, p99 <= 5 ms.
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A metric's labelled children, each looked up once: `labels()` validates and locks on
    every call, which the proxy would otherwise pay five times per request."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class LimiterMetrics:
    """The limiter's families; `providers` (upstream names) and `routes` ((provider, route
    path) pairs) are the label values created at 0 up front."""

    def __init__(self, registry: CollectorRegistry, providers: Iterable[str],
                 routes: Iterable[tuple[str, str]]) -> None:
        self.requests = Counter(
            names.LIMITER_REQUESTS, "HTTP requests answered by the limiter.",
            ["route", "code", "provider"], registry=registry)
        self.request_duration = Histogram(
            names.LIMITER_REQUEST_DURATION_SECONDS,
            "Time from the request's arrival to the end of the answer (streams included).",
            ["route"], buckets=_REQUEST_BUCKETS, registry=registry)
        self.overhead = Histogram(
            names.LIMITER_OVERHEAD_SECONDS,
            "Time the limiter adds to a proxied request: request time minus upstream time.",
            ["route"], buckets=_OVERHEAD_BUCKETS, registry=registry)
        self.upstream_duration = Histogram(
            names.LIMITER_UPSTREAM_DURATION_SECONDS,
            "Time spent waiting on the provider, from sending the request to its last byte.",
            ["provider"], buckets=_REQUEST_BUCKETS, registry=registry)
        self.time_to_first_token = Histogram(
            names.LIMITER_TIME_TO_FIRST_TOKEN_SECONDS,
            "Time from sending the request to the provider's first response byte.",
            ["provider"], buckets=_REQUEST_BUCKETS, registry=registry)
        self.blocked = Counter(
            names.LIMITER_BLOCKED, "Requests refused with 409 because spend reached the limit.",
            ["user"], registry=registry)
        self.fail_open = Counter(
            names.LIMITER_FAIL_OPEN,
            "Requests let through although the limit check failed (fail_mode: open).",
            ["reason"], registry=registry)
        self.records_refused = Counter(
            names.LIMITER_RECORDS_REFUSED,
            "Usage records the ledger refused because they are older than the oldest message "
            "it keeps (message retention): a late replay or re-import, counted nowhere else.",
            registry=registry)
        self.spool_pending = Gauge(
            names.LIMITER_SPOOL_PENDING,
            "Usage records waiting in the local spool for the ledger to come back.",
            registry=registry)
        self.key_checks = Counter(
            names.LIMITER_KEY_CHECKS,
            "Key checks answered, by source: the ledger, or memory kept current by the "
            "ledger's change notifications.",
            ["source"], registry=registry)
        self.connection_wait = Histogram(
            names.LIMITER_UPSTREAM_CONNECTION_WAIT_SECONDS,
            "Time a provider call waited for a free connection to its upstream (observed for "
            "the calls that waited: the upstream's max_connections was reached).",
            ["provider"], buckets=_CONNECTION_WAIT_BUCKETS, registry=registry)
        self.client_timeouts = Counter(
            names.LIMITER_CLIENT_TIMEOUTS,
            "Requests cut off because the client did not send them in time (answered 408).",
            ["phase"], registry=registry)
        self.buffered_body_bytes = Gauge(
            names.LIMITER_BUFFERED_BODY_BYTES,
            "Request-body bytes held in memory now (bounded by max_buffered_body_bytes).",
            registry=registry)
        # The per-request families, by positional label values.
        self.requests_by = Children(self.requests)  # route, code, provider
        self.request_duration_by = Children(self.request_duration)  # route
        self.overhead_by = Children(self.overhead)  # route
        self.upstream_duration_by = Children(self.upstream_duration)  # provider
        self.time_to_first_token_by = Children(self.time_to_first_token)  # provider
        self.key_checks_by = Children(self.key_checks)  # source
        self.connection_wait_by = Children(self.connection_wait)  # provider
        self.client_timeouts_by = Children(self.client_timeouts)  # phase
        for phase in CLIENT_TIMEOUT_PHASES:
            self.client_timeouts.labels(phase=phase)
        for source in KEY_CHECK_SOURCES:
            self.key_checks.labels(source=source)
        for reason in FAIL_OPEN_REASONS:
            self.fail_open.labels(reason=reason)
        for provider in providers:
            self.upstream_duration.labels(provider=provider)
            self.time_to_first_token.labels(provider=provider)
            self.connection_wait.labels(provider=provider)
        for provider, route in routes:
            self.request_duration.labels(route=route)
            self.overhead.labels(route=route)
            for code in ("200", "409"):
                self.requests.labels(route=route, code=code, provider=provider)
