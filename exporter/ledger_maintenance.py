"""The exporter's background task: the ledger's partitions ahead of time, and the prune.

Runs `ledger.prune.maintain` at start-up and then every `ledger.maintenance_interval_seconds`,
in a worker thread (its SQL is blocking). With several exporter replicas on PostgreSQL one of
them does the work per round (an advisory lock); the others skip. A failed round is logged (a
warning when the database is unreachable, which the ledger collector reports already) and
tried again next round; /metrics shows when the last prune succeeded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from ledger.prune import maintain
from ledger.settings import LedgerSettings

LOGGER = logging.getLogger("agentmeter.exporter")


async def run_maintenance(engine: Engine, settings: LedgerSettings,
                          clock: Callable[[], datetime]) -> None:
    """Maintain the ledger every interval until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        round_ = loop.run_in_executor(None, maintain, engine, settings, clock())
        try:
            result = await asyncio.shield(round_)
        except asyncio.CancelledError:
            # The round's thread cannot be interrupted: let it hand its connections back
            # before the exporter disposes of the engine.
            await asyncio.wait([round_])
            raise
        except OperationalError as exc:
            # The database refused or is away: the ledger collector reports an outage already.
            LOGGER.warning("ledger maintenance failed (%s); retrying in %gs",
                           str(exc.orig or exc).strip().splitlines()[0],
                           settings.maintenance_interval_seconds)
        except Exception:
            LOGGER.exception("ledger maintenance failed; retrying in %gs",
                             settings.maintenance_interval_seconds)
        else:
            if result is None:
                LOGGER.debug("another process is maintaining the ledger")
            elif result.kept_since is not None:
                LOGGER.info("pruned %d messages created before %s", result.messages,
                            result.kept_since.isoformat())
        await asyncio.sleep(settings.maintenance_interval_seconds)
