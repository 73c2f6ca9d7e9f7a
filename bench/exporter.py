"""Scrape time and memory of the exporter on a large ledger (PostgreSQL).

Two ledgers with the same users and models (10,000 users, 50 models, 3 models per user, 90 days)
and 10M and 1M messages. For each, the exporter runs as its own process, exactly as
`agentmeter exporter` serves, and is scraped over HTTP the way Prometheus does (OpenMetrics
Accept header, gzip); the figures are the scrape's wall time and the process's resident memory.
A scrape reads rollups only, so the 10M ledger must scrape within 1.2x of the 1M one. Both
exporters run at once and are scraped in turn, so load from elsewhere on the machine falls on
both alike.

    python -m bench.exporter [--admin-url postgresql://postgres@127.0.0.1:5432/test] [--reseed]

Seeding the 10M ledger takes several minutes; it is kept between runs (`--reseed` rebuilds it).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.seed_ledger import add_dataset_arguments, dataset_ledgers

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,"
                     "text/plain;version=0.0.4;q=0.2,*/*;q=0.1")
TARGET_P50_SECONDS = 1.0
TARGET_RSS_MB = 300.0
TARGET_RATIO = 1.2
ROOT = Path(__file__).resolve().parent.parent


def _rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


@dataclass
class _Scrapes:
    """What the scrapes of one exporter saw."""

    timings: list[float] = field(default_factory=list)
    wire: int = 0
    plain: int = 0
    healthy: bool = True


async def _scrape_alternately(urls: list[str], scrapes: int) -> list[_Scrapes]:
    """Scrape each URL in turn, round after round, so a change in the machine's load (it is
    shared) falls on every exporter alike and their ratio stays meaningful."""
    seen = [_Scrapes() for _ in urls]
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=True) as session:
        for i in range(scrapes + 1):
            for url, record in zip(urls, seen, strict=True):
                started = time.perf_counter()
                async with session.get(url, headers={"Accept": PROMETHEUS_ACCEPT,
                                                     "Accept-Encoding": "gzip"}) as response:
                    body = await response.read()
                    elapsed = time.perf_counter() - started
                    record.wire = int(response.headers.get("Content-Length", 0)) or record.wire
                if response.status != 200:
                    raise RuntimeError(f"scrape answered {response.status}")
                record.healthy = record.healthy and \
                    b'agentmeter_collector_success{collector="ledger"} 1' in body
                record.plain = len(body)
                if i:  # the first round warms the connection pools and the caches
                    record.timings.append(elapsed)
    return seen


def _wait_listening(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the exporter exited during start-up")
        try:
            asyncio.run(_probe(url))
            return
        except (aiohttp.ClientError, OSError):
            time.sleep(0.2)
    raise RuntimeError("the exporter did not start listening")


async def _probe(url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        await response.read()


def _start(url: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.exporter", "--serve", url, "--port", str(port)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure(urls: list[str], scrapes: int) -> list[dict[str, float]]:
    """Run one exporter process per ledger URL, all at once, and scrape them in turn."""
    processes: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for url in urls:
            port = _free_port()
            processes.append((_start(url, port), f"http://127.0.0.1:{port}"))
        for process, base in processes:
            _wait_listening(f"{base}/healthz", process)
        seen = asyncio.run(_scrape_alternately([f"{base}/metrics" for _, base in processes],
                                               scrapes))
        memory = [_rss_mb(process.pid) for process, _ in processes]
    finally:
        for process, _ in processes:
            _stop(process)
    results = []
    for record, (rss, peak) in zip(seen, memory, strict=True):
        ordered = sorted(record.timings)
        p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
        results.append({"p50": statistics.median(ordered), "p90": p90, "max": ordered[-1],
                        "rss_mb": rss, "peak_rss_mb": peak, "wire_mb": record.wire / 1e6,
                        "body_mb": record.plain / 1e6, "healthy": float(record.healthy)})
    return results


def serve(url: str, port: int) -> None:
    """The exporter process of the benchmark (the same code `agentmeter exporter` runs)."""
    from exporter.app import serve as serve_exporter
    from exporter.settings import ExporterSettings
    from ledger.settings import DatabaseSettings

    # A generous budget, so a slow scrape is measured rather than cut off.
    serve_exporter(ExporterSettings(collector_timeout_seconds=60),
                   DatabaseSettings(url=url), listen=f"127.0.0.1:{port}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return

    ledgers = dataset_ledgers(args)
    results = dict(zip(ledgers, measure(list(ledgers.values()), args.scrapes), strict=True))
    for messages, figures in results.items():
        print(f"{messages:>12,} messages: scrape p50 {figures['p50']:.3f}s "
              f"p90 {figures['p90']:.3f}s max {figures['max']:.3f}s | "
              f"RSS {figures['rss_mb']:.0f} MB (peak {figures['peak_rss_mb']:.0f} MB) | "
              f"body {figures['body_mb']:.1f} MB, gzip {figures['wire_mb']:.1f} MB | "
              f"ledger collector {'ok' if figures['healthy'] else 'FAILED'}", flush=True)
    big, small = results[args.messages], results[args.small_messages]
    ratio = big["p50"] / small["p50"]
    p50_met = big["p50"] <= TARGET_P50_SECONDS
    print(f"p50 target <= {TARGET_P50_SECONDS}s: {'met' if p50_met else 'MISSED'}; "
          f"RSS target <= {TARGET_RSS_MB:.0f} MB: "
          f"{'met' if big['peak_rss_mb'] <= TARGET_RSS_MB else 'MISSED'}; "
          f"{args.messages:,} vs {args.small_messages:,} messages: {ratio:.2f}x "
          f"(target <= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'MISSED'})")


if __name__ == "__main__":
    main()
