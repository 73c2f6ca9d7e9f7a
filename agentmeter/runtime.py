"""Running the long-lived processes: `agentmeter limiter`, `exporter` and `serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry

from agentmeter.coder_sync_job import coder_sync_jobs
from agentmeter.config import Config
from agentmeter.logs import setup_logging
from exporter.app import run_exporter as exporter_main
from limiter.http.server import parse_listen
from limiter.http.server import run_limiter as limiter_main

LOGGER = logging.getLogger("agentmeter.cli")


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop the long-lived processes run on (`event_loop` in the config)."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            LOGGER.warning("uvloop is not installed; running on asyncio's default loop")
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def _run_until_signalled(loop: str, *jobs: Coroutine[Any, Any, None]) -> int:
    """Run the jobs until SIGINT/SIGTERM or until one of them fails; then stop them all."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(job) for job in jobs]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in [*tasks, stopper]:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
        runner.run(main())
    return 0


def run_limiter(config: Config, listen: str | None) -> int:
    registry = CollectorRegistry()
    setup_logging(config.log_level, registry)
    host, port = parse_listen(listen or config.limiter.listen)
    LOGGER.info("limiter listening on http://%s:%d", host, port)
    return _run_until_signalled(config.event_loop,
                                limiter_main(config.limiter, config.database, host, port,
                                             registry=registry, coder=config.coder))


def run_exporter(config: Config, listen: str | None) -> int:
    registry = CollectorRegistry(auto_describe=False)
    setup_logging(config.log_level, registry)
    sync = coder_sync_jobs(config.coder, config.database, registry)
    return _run_until_signalled(config.event_loop,
                                exporter_main(config.exporter, config.database,
                                              listen=listen, ledger=config.ledger,
                                              registry=registry), *sync)


def run_serve(config: Config) -> int:
    """Both listeners in one process; log events are counted on the exporter's /metrics."""
    limiter_registry = CollectorRegistry()
    exporter_registry = CollectorRegistry(auto_describe=False)
    setup_logging(config.log_level, exporter_registry)
    sync = coder_sync_jobs(config.coder, config.database, exporter_registry)
    host, port = parse_listen(config.limiter.listen)
    print(f"agentmeter limiter:  http://{host}:{port}  (OpenAI: /v1/chat/completions, "
          f"Anthropic: /v1/messages, status: /api/v1/usage/status, /metrics)", flush=True)
    print(f"agentmeter exporter: http://{config.exporter.listen}/metrics", flush=True)
    print("create a key:        .venv/bin/agentmeter keys create USER   "
          "(users come from the policy file)", flush=True)
    return _run_until_signalled(
        config.event_loop,
        limiter_main(config.limiter, config.database, host, port, registry=limiter_registry,
                     coder=config.coder),
        exporter_main(config.exporter, config.database, ledger=config.ledger,
                      registry=exporter_registry),
        *sync,
    )
