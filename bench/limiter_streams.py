"""Many long streams at once: what coding agents do to a gateway.

    .venv/bin/python -m bench.limiter_streams [--streams 4000] [--rounds 2] [--ramp 4]

Each stream lasts about ten seconds (20 events, 500 ms apart, from the fake provider of
tests/support/fake_upstream.py). `--streams` of them are opened over `--ramp` seconds straight
to the fake and then through one `agentmeter limiter` process (ledger on a scratch PostgreSQL
database, as in bench/limiter.py), round after round. Per round it prints the errors, the time
to the first byte (p50, p99) of both, and the limiter's RSS growth per open stream (its peak
while all streams are open, minus its RSS before the round, over the number of streams).

Targets: no error, TTFB p99 through the limiter within 1 s of direct, at most 32 KiB of limiter
RSS per open stream.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

from bench.limiter import (
    PATHS,
    PG_ADMIN_URL,
    PROVIDER_KEY,
    drop_database,
    free_port,
    percentile,
    prepare_database,
    request_body,
    rss_bytes,
    spawn,
    stop_process,
)

DB_NAME = "bench_limiter_streams"
EVENT_DELAY_SECONDS = 0.5
# 16 words + the role, finish, usage and [DONE] events: 20 events, 10 seconds.
WORDS = 16


async def one_stream(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                     body: bytes) -> float:
    """Time to the first body byte of one stream read to its end."""
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        await response.content.readany()
        first = time.perf_counter() - started
        async for _ in response.content.iter_any():
            pass
    return first


async def many(url: str, headers: dict[str, str], body: bytes, streams: int, ramp: float,
               pid: int | None) -> tuple[list[float], int, int]:
    """TTFBs, errors and the peak RSS of `pid` (0 without one) while the streams run."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    peak = 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def started_later(i: int) -> float:
            await asyncio.sleep(ramp * i / streams)
            return await one_stream(session, url, headers, body)

        tasks = [asyncio.create_task(started_later(i)) for i in range(streams)]
        while not all(task.done() for task in tasks):
            if pid is not None:
                peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.25)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    firsts = [r for r in results if isinstance(r, float)]
    errors = [r for r in results if not isinstance(r, float)]
    if errors:
        print(f"    first error: {errors[0]!r}")
    return firsts, len(errors), peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ramp", type=float, default=4.0, help="seconds to open them all")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    args = parser.parse_args(argv)

    db_url, key = prepare_database(args.pg_admin_url, DB_NAME)
    figures: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-limiter-streams-") as tmp:
        workdir = Path(tmp)
        ports = {name: free_port() for name in ("fake", "limiter")}
        fake_url = f"http://127.0.0.1:{ports['fake']}"
        upstream = {"base_url": fake_url, "api_key": PROVIDER_KEY}
        config = {"database": {"url": db_url}, "log_level": "warning",
                  "limiter": {"spool_dir": str(workdir / "spool"),
                              "providers": {"openai": upstream}}}
        config_path = workdir / "agentmeter.yaml"
        config_path.write_text(yaml.safe_dump(config))
        processes = [
            spawn(["tests.support.fake_upstream", "--port", str(ports["fake"]), "--words",
                   str(WORDS), "--event-delay", str(EVENT_DELAY_SECONDS), "--backlog", "4096"],
                  ports["fake"], workdir / "fake.log"),
            spawn(["agentmeter", "limiter", "--listen", f"127.0.0.1:{ports['limiter']}",
                   "--config", str(config_path)], ports["limiter"], workdir / "limiter.log"),
        ]
        limiter_pid = processes[1].pid
        body = request_body("openai", True)
        path = PATHS["openai"]
        json_type = {"Content-Type": "application/json"}
        direct = (f"{fake_url}{path}", {"Authorization": f"Bearer {PROVIDER_KEY}", **json_type})
        limited = (f"http://127.0.0.1:{ports['limiter']}{path}",
                   {"Authorization": f"Bearer {key}", **json_type})
        try:
            asyncio.run(many(*limited, body, 20, 0.1, None))  # warm: catalog, key check
            for number in range(1, args.rounds + 1):
                d_first, d_errors, _ = asyncio.run(many(*direct, body, args.streams,
                                                        args.ramp, None))
                idle = rss_bytes(limiter_pid)
                l_first, l_errors, peak = asyncio.run(many(*limited, body, args.streams,
                                                           args.ramp, limiter_pid))
                round_figures = {
                    "errors direct": d_errors, "errors limiter": l_errors,
                    "TTFB p50 direct, s": percentile(d_first, 50) if d_first else 0.0,
                    "TTFB p99 direct, s": percentile(d_first, 99) if d_first else 0.0,
                    "TTFB p50 limiter, s": percentile(l_first, 50) if l_first else 0.0,
                    "TTFB p99 limiter, s": percentile(l_first, 99) if l_first else 0.0,
                    "RSS per open stream, KiB": (peak - idle) / args.streams / 1024,
                    "limiter RSS idle, MiB": idle / 2**20,
                }
                figures.append(round_figures)
                print(f"round {number}: " + "  ".join(
                    f"{name} {value:.3f}" for name, value in round_figures.items()))
                sys.stdout.flush()
        finally:
            for process in processes:
                stop_process(process)
            drop_database(args.pg_admin_url, DB_NAME)
    print(f"\n{args.streams} streams, medians over {len(figures)} rounds (min-max):")
    for name in figures[0]:
        values = [f[name] for f in figures]
        print(f"  {name:28s} {statistics.median(values):9.3f}  "
              f"({min(values):.3f}-{max(values):.3f})")
    worst = {name: max(f[name] for f in figures) for name in figures[0]}
    checks = {
        "no error": worst["errors limiter"] == 0,
        "TTFB p99 within 1 s of direct": all(
            f["TTFB p99 limiter, s"] - f["TTFB p99 direct, s"] <= 1.0 for f in figures),
        "<= 32 KiB per stream": worst["RSS per open stream, KiB"] <= 32,
    }
    print("targets: " + "  ".join(f"{n}: {'ok' if ok else 'MISSED'}" for n, ok in checks.items()))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
