"""Typed keys for what the limiter application holds (no string keys, no module globals)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.settings import DatabaseSettings
from limiter.admission.check_cache import CheckCache
from limiter.settings import LimiterSettings

if TYPE_CHECKING:
    from limiter.admission.answer_owners import AnswerOwners
    from limiter.admission.catalog_cache import CatalogCache
    from limiter.admission.enforcement import Enforcer
    from limiter.admission.ledger_listener import LedgerListener
    from limiter.metrics import LimiterMetrics
    from limiter.recording.recorder import Recorder
    from limiter.relay.body import BodyBudget
    from limiter.relay.upstreams import Upstreams

Clock = Callable[[], datetime]

SETTINGS = web.AppKey("settings", LimiterSettings)
DATABASE = web.AppKey("database", DatabaseSettings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
ENGINE = web.AppKey("engine", AsyncEngine)
UPSTREAMS: web.AppKey[Upstreams] = web.AppKey("upstreams")
BODY_BUDGET: web.AppKey[BodyBudget] = web.AppKey("body_budget")
METRICS: web.AppKey[LimiterMetrics] = web.AppKey("metrics")
CATALOG: web.AppKey[CatalogCache] = web.AppKey("catalog")
CHECK_CACHE = web.AppKey("check_cache", CheckCache)
# PostgreSQL ledgers with the check cache on: what hears the ledger's changes.
LISTENER: web.AppKey[LedgerListener | None] = web.AppKey("listener")
ENFORCER: web.AppKey[Enforcer] = web.AppKey("enforcer")
RECORDER: web.AppKey[Recorder] = web.AppKey("recorder")
ANSWER_OWNERS: web.AppKey[AnswerOwners] = web.AppKey("answer_owners")

# Set by the proxy handler for the metrics middleware: which provider, how long upstream took.
PROVIDER = web.RequestKey("provider", str)
# Set by the proxy handler: the route's error body shape (limiter.relay.registry.ErrorShape).
ERROR_SHAPE: web.RequestKey[Callable[[int, str, str], dict[str, Any]]] = web.RequestKey(
    "error_shape")
UPSTREAM_SECONDS = web.RequestKey("upstream_seconds", float)
# perf_counter() when the answer was complete for the client (recording may follow).
RESPONDED_AT = web.RequestKey("responded_at", float)
