"""The exporter's HTTP server: `/metrics` (Prometheus text or OpenMetrics) and `/healthz`.

Collectors are synchronous (prometheus-client calls `collect()` and the ledger is read through a
sync engine), so the exposition is built in one dedicated thread, never on the event loop: in
`agentmeter serve` the limiter shares that loop, and a slow scrape must not delay a single proxied
request. One thread also serialises concurrent scrapes, so two Prometheus replicas do not double
the load on the database.

The cyclic garbage collector is paused while a scrape is built (`gc_paused`). A scrape allocates a
few hundred thousand short-lived objects (ledger rows, label strings, lines) that reference
counting frees; with the collector on, those allocations set off full collections that walk every
object in the process, and took a quarter of a scrape. The pause is bounded by the scrape (the
collectors' time budget bounds that), and collection resumes as soon as the last scrape is done.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.exposition import render_chunks

HealthStatus = Callable[[], Mapping[str, bool | None]]

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
HEALTH_KEY: web.AppKey[HealthStatus] = web.AppKey("health")
EXECUTOR_KEY = web.AppKey("executor", ThreadPoolExecutor)

# Below this size gzip costs more than it saves.
GZIP_MIN_BYTES = 1024
# zlib's window size plus 16: a gzip header and trailer around the deflate stream.
_GZIP_WBITS = 16 + zlib.MAX_WBITS

_INDEX = b"""<html><head><title>agentmeter exporter</title></head>
<body><h1>agentmeter exporter</h1>
<p><a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a></p>
</body></html>
"""


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() == "gzip":
            return params.replace(" ", "") not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False


class _GcPause:
    """Counts the scrapes in progress (several apps may share a process, e.g. in tests) and
    whether the collector was on before the first of them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.restore = False


_GC_PAUSE = _GcPause()


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block, back on after the last such block ends
    (unless something else had turned it off before the first began)."""
    pause = _GC_PAUSE
    with pause.lock:
        if pause.holders == 0:
            pause.restore = gc.isenabled()
            gc.disable()
        pause.holders += 1
    try:
        yield
    finally:
        with pause.lock:
            pause.holders -= 1
            if pause.holders == 0 and pause.restore:
                gc.enable()


def render(registry: CollectorRegistry, accept: str, accept_encoding: str
           ) -> tuple[bytes, str, str | None]:
    """The exposition body, its content type and its content encoding, for the given headers."""
    with gc_paused():
        chunks, content_type = render_chunks(registry, accept)
        if _accepts_gzip(accept_encoding):
            body, encoding = _gzip(chunks)
            return body, content_type, encoding
        return b"".join(chunks), content_type, None


def _gzip(chunks: Iterable[bytes]) -> tuple[bytes, str | None]:
    """Gzip the exposition family by family as it is written, so a 20 MB page is never held
    whole before compression; a page below GZIP_MIN_BYTES goes out as it is."""
    chunks = iter(chunks)
    head: list[bytes] = []
    size = 0
    for chunk in chunks:
        head.append(chunk)
        size += len(chunk)
        if size >= GZIP_MIN_BYTES:
            break
    else:
        return b"".join(head), None
    # Level 1: the exposition is highly repetitive; higher levels cost CPU for little gain.
    compressor = zlib.compressobj(1, zlib.DEFLATED, _GZIP_WBITS)
    out = [compressor.compress(chunk) for chunk in head]
    out.extend(compressor.compress(chunk) for chunk in chunks)
    out.append(compressor.flush())
    return b"".join(out), "gzip"


async def _metrics(request: web.Request) -> web.Response:
    app = request.app
    body, content_type, encoding = await asyncio.get_running_loop().run_in_executor(
        app[EXECUTOR_KEY], render, app[REGISTRY_KEY],
        request.headers.get("Accept", ""), request.headers.get("Accept-Encoding", ""))
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if encoding:
        headers["Content-Encoding"] = encoding
    return web.Response(body=body, headers=headers)


async def _healthz(request: web.Request) -> web.Response:
    """Liveness: the server answers. A failing collector is a metric, not a reason to restart."""
    collectors = dict(request.app[HEALTH_KEY]())
    return web.Response(
        text=json.dumps({"status": "ok", "collectors": collectors}, sort_keys=True),
        content_type="application/json",
    )


async def _index(request: web.Request) -> web.Response:
    return web.Response(body=_INDEX, content_type="text/html")


def create_app(registry: CollectorRegistry, *, health: HealthStatus | None = None
               ) -> web.Application:
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app[HEALTH_KEY] = health if health is not None else dict
    app[EXECUTOR_KEY] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exporter-scrape")
    app.router.add_get("/", _index)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)

    async def stop_executor(app: web.Application) -> None:
        app[EXECUTOR_KEY].shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(stop_executor)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:9787`) to a host and a port."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


@dataclass(frozen=True)
class Listening:
    """A started server; `port` is the bound one (useful with port 0)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def listening(app: web.Application, listen: str) -> AsyncIterator[Listening]:
    """Serve `app` on `listen` for the duration of the block."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1]) if runner.addresses else port
        yield Listening(host, bound)
    finally:
        await runner.cleanup()
