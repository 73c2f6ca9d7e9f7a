"""The model catalog, cached for a couple of seconds (spend is never cached).

Every proxied request needs its model looked up by name or alias; the catalog changes only on
`apply`, so a short TTL keeps that lookup off the database on the hot path while a policy
change still takes effect within seconds. When the database is away the last known catalog
keeps serving (a fail-open request still needs its model resolved).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.catalog import Model, all_models, name_and_alias_index
from limiter.database import DATABASE_ERRORS, in_transaction
from limiter.http.errors import ServiceUnavailable

DEFAULT_TTL_SECONDS = 2.0


class CatalogUnavailable(ServiceUnavailable):
    """The catalog could not be read and no earlier copy is known."""

    default_code = "ledger_unavailable"
    default_message = "The model catalog cannot be read right now."


class Catalog:
    def __init__(self, models: list[Model]) -> None:
        self.models = models
        self._by_name = name_and_alias_index(models)

    def find(self, name_or_alias: str) -> Model | None:
        return self._by_name.get(name_or_alias)

    def enabled(self) -> list[Model]:
        return [m for m in self.models if m.enabled]


class CatalogCache:
    def __init__(self, engine: AsyncEngine, timeout_s: float,
                 ttl_seconds: float = DEFAULT_TTL_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._timeout = timeout_s
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._catalog: Catalog | None = None
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> Catalog:
        """The catalog, re-read when older than the TTL; a stale copy if the database is away."""
        if self._catalog is not None and self._monotonic() - self._loaded_at < self._ttl:
            return self._catalog
        async with self._lock:  # one reload at a time; the others wait for its result
            if self._catalog is not None and self._monotonic() - self._loaded_at < self._ttl:
                return self._catalog
            try:
                models = await in_transaction(self._engine, self._timeout, all_models)
            except DATABASE_ERRORS as exc:
                if self._catalog is None:
                    raise CatalogUnavailable() from exc
                # Try again on the next request, not on every one: back off for a TTL.
                self._loaded_at = self._monotonic()
                return self._catalog
            self._catalog = Catalog(models)
            self._loaded_at = self._monotonic()
            return self._catalog

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")
