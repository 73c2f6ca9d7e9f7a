"""The limiter's application factory.

`create_app` builds the app from settings; the database engine, the upstreams' HTTP sessions,
the Coder client (with `coder.url` set) and the spool replayer are opened and closed in
`cleanup_ctx`, so a test (or the CLI) gets a
fully wired gateway from one call and nothing lives in module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from coder.client import CoderClient
from coder.settings import CoderSettings
from coder.tokens import TokenResolver
from ledger.engine import create_async_engine, create_sync_engine
from ledger.settings import DatabaseSettings
from limiter.admission.answer_owners import AnswerOwners
from limiter.admission.catalog_cache import DEFAULT_TTL_SECONDS, CatalogCache
from limiter.admission.check_cache import CheckCache
from limiter.admission.coder_tokens import CoderTokenLookups
from limiter.admission.enforcement import Enforcer
from limiter.admission.key_check import KeyChecker
from limiter.admission.ledger_listener import LedgerListener
from limiter.http.app_keys import (
    ANSWER_OWNERS,
    BODY_BUDGET,
    CATALOG,
    CHECK_CACHE,
    CLOCK,
    DATABASE,
    ENFORCER,
    ENGINE,
    LISTENER,
    METRICS,
    RECORDER,
    REGISTRY,
    SETTINGS,
    UPSTREAMS,
    Clock,
)
from limiter.http.middleware import error_middleware, metrics_middleware
from limiter.http.routes import setup_routes
from limiter.metrics import LimiterMetrics
from limiter.recording.journal import Journal
from limiter.recording.recorder import (
    DEFAULT_REPLAY_INTERVAL_SECONDS,
    WRITE_TIMEOUT_FACTOR,
    Recorder,
)
from limiter.recording.spool import Spool
from limiter.relay.body import BodyBudget
from limiter.relay.registry import ROUTES, default_upstream_name
from limiter.relay.upstreams import Upstreams, upstream_kind
from limiter.settings import LimiterSettings

# Under the spool directory: the write-ahead journal of records not yet committed.
JOURNAL_DIR = "journal"
# How the limiter's ledger connections show in pg_stat_activity (the key check's: pg_check).
APPLICATION_NAME = "agentmeter-limiter"
WRITER_APPLICATION_NAME = "agentmeter-limiter-writer"


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(config: LimiterSettings, database: DatabaseSettings, *,
               registry: CollectorRegistry | None = None, clock: Clock | None = None,
               replay_interval_s: float = DEFAULT_REPLAY_INTERVAL_SECONDS,
               catalog_ttl_s: float = DEFAULT_TTL_SECONDS,
               coder: CoderSettings | None = None) -> web.Application:
    """The gateway; `coder` (its `url` set) makes it accept Coder tokens as keys."""
    coder = coder if coder is not None else CoderSettings()
    app = web.Application(middlewares=[metrics_middleware, error_middleware])
    app[SETTINGS] = config
    app[DATABASE] = database
    app[REGISTRY] = registry if registry is not None else CollectorRegistry()
    app[CLOCK] = clock if clock is not None else utc_now
    kinds = {name: upstream_kind(name, s) for name, s in config.providers.items()}
    app[METRICS] = LimiterMetrics(
        app[REGISTRY], providers=kinds,
        routes=[(default_upstream_name(route.kind, kinds) or route.kind, route.path)
                for route in ROUTES])
    app[BODY_BUDGET] = BodyBudget(config.max_buffered_body_bytes)
    app[METRICS].buffered_body_bytes.set_function(lambda: app[BODY_BUDGET].held)
    app[CHECK_CACHE] = CheckCache(config.check_cache_seconds)
    app[LISTENER] = None

    async def ledger_ctx(app: web.Application) -> AsyncIterator[None]:
        engine = create_async_engine(database, application_name=APPLICATION_NAME)
        metrics = app[METRICS]
        spool = Spool(config.spool_dir, on_pending=metrics.spool_pending.set)
        journal = Journal(Path(config.spool_dir) / JOURNAL_DIR)
        await asyncio.to_thread(spool.open)
        await asyncio.to_thread(journal.open)
        app[ENGINE] = engine
        app[CATALOG] = CatalogCache(engine, database.connect_timeout_seconds, catalog_ttl_s)
        key_checker, listener, listening = None, None, None
        if KeyChecker.supports(database):
            key_checker = KeyChecker(database, app[CHECK_CACHE], metrics)
            if config.check_cache_seconds > 0:
                listener = LedgerListener(database, app[CHECK_CACHE])
                listening = asyncio.create_task(listener.run(),
                                                name="agentmeter-ledger-listener")
        app[LISTENER] = listener
        coder_client, resolver, lookups = None, None, None
        if coder.enabled:
            coder_client = CoderClient(coder)
            resolver = TokenResolver(coder, coder_client, engine)
            lookups = CoderTokenLookups(resolver)
            app[REGISTRY].register(lookups)
        app[ENFORCER] = Enforcer(engine, config, database, metrics, key_checker, resolver)
        app[ANSWER_OWNERS] = AnswerOwners(engine, database.connect_timeout_seconds)
        writer_engine = create_sync_engine(
            database, statement_timeout_s=database.connect_timeout_seconds * WRITE_TIMEOUT_FACTOR,
            application_name=WRITER_APPLICATION_NAME)
        app[RECORDER] = Recorder(engine, spool, database, replay_interval_s,
                                 writer_engine=writer_engine, journal=journal,
                                 linger_s=config.record_linger_seconds,
                                 on_refused=metrics.records_refused.inc)
        try:
            yield
        finally:
            if listening is not None:
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listening
            await asyncio.to_thread(app[RECORDER].close)
            writer_engine.dispose()
            spool.close()
            journal.close()
            if key_checker is not None:
                await key_checker.close()
            if coder_client is not None:
                await coder_client.close()
            if lookups is not None:
                app[REGISTRY].unregister(lookups)
            await engine.dispose()

    async def upstreams_ctx(app: web.Application) -> AsyncIterator[None]:
        upstreams = Upstreams(config, app[METRICS])
        app[UPSTREAMS] = upstreams
        try:
            yield
        finally:
            await upstreams.close()

    async def replayer_ctx(app: web.Application) -> AsyncIterator[None]:
        """Replays the spool at start-up and then every few seconds while it is not empty."""
        recorder = app[RECORDER]
        task = asyncio.create_task(recorder.run_replayer(), name="agentmeter-spool-replay")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await recorder.idle()

    app.cleanup_ctx.extend([ledger_ctx, upstreams_ctx, replayer_ctx])
    setup_routes(app)
    return app
