"""What the limiter adds to a provider call: latency, time to first byte, throughput, memory.

    .venv/bin/python -m bench.limiter [--rounds 3] [--requests 200] [--seconds 3] [--duration 10]
                                      [--body small|agent]

A fake provider (tests/support/fake_upstream.py) runs in its own process on loopback; the limiter
runs as `agentmeter limiter` in another, with its ledger on a scratch PostgreSQL database
`bench_limiter` (dropped and re-created, migrated, seeded with a user, a key, limits and priced
models). Calls straight to the fake and calls through the limiter are alternated within each
round, so both see the same machine load; the spread between rounds says how far to trust the
figures on a shared machine. A third server, the relay alone without authentication or ledger,
shows the relay's own cost on the same aiohttp server and client (so the difference is what the
limit check and the recording add); the CPU that the limiter's ledger connections cost
PostgreSQL per call is printed beside the limiter's own.

Targets: added p50 <= 1 ms and p99 <= 5 ms at concurrency 1, added stream TTFB p50 <= 2 ms,
throughput of complete answers through the limiter at concurrency 32 >= 20% of direct for the
small body and >= 50% for the agent-sized one, RSS growth < 10% over `--duration` seconds of
load (use `--duration 300` for the five-minute figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_NAME = "bench_limiter"
PROVIDER_KEY = "sk-bench-provider"

POLICY = """
limits:
  enabled: true
  period: month
  default_limit_usd: 1000000
users:
  - username: bench
    name: Bench User
models:
  - name: bench-gpt
    provider: openai
    pricing: {input: 2, output: 8, cache_read: 0.5}
  - name: bench-claude
    provider: anthropic
    pricing: {input: 3, output: 15, cache_read: 0.3, cache_write: 3.75, cache_write_1h: 6}
"""

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
MODELS = {"openai": "bench-gpt", "anthropic": "bench-claude"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int, main_thread_only: bool = False) -> float:
    """CPU time (user + system) a process, or only its main thread, has used so far."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread_only else f"/proc/{pid}/stat")
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ledger_backend_cpu(admin_url: str, name: str = DB_NAME) -> dict[int, tuple[str, float]]:
    """Per PostgreSQL process serving a connection to ledger `name`: the client's
    application_name (the limiter names its key check's, its writer's and its other
    connections) and the CPU seconds the process has used so far.

    On this benchmark's single machine they share the CPUs with the limiter: `perf sched`
    showed the key check's backend woken onto the limiter's vCPU and run there, ahead of the
    limiter, while the other vCPU idled, so its time adds to the added latency. Empty when
    the server's processes are not visible from here (another machine).
    """
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, application_name FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    used: dict[int, tuple[str, float]] = {}
    for pid, client in rows:
        try:
            used[pid] = client, cpu_seconds(pid)
        except OSError:  # gone, or a server on another machine
            continue
    return used


def ledger_cpu_by_client(before: dict[int, tuple[str, float]],
                         after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each kind of client's backends used between two `ledger_backend_cpu`."""
    spent: dict[str, float] = {}
    for pid, (client, used) in after.items():
        earlier = before.get(pid, (client, 0.0))[1]
        spent[client] = spent.get(client, 0.0) + used - earlier
    return spent


def prepare_database(admin_url: str, name: str = DB_NAME) -> tuple[str, str]:
    """A fresh migrated ledger database `name` and a user key for it."""
    from ledger.engine import create_sync_engine
    from ledger.keys import create_key
    from ledger.migrate import upgrade
    from ledger.policy_apply import apply_policy
    from ledger.policy_file import parse_policy
    from ledger.settings import DatabaseSettings

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    engine = create_sync_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            apply_policy(conn, parse_policy(POLICY, "bench policy"))
            key = create_key(conn, "bench").secret
    finally:
        engine.dispose()
    return url, key


def drop_database(admin_url: str, name: str = DB_NAME) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def spawn(argv: list[str], port: int, log_path: Path,
          cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """A server process (`python -m ARGV`, run from `cwd`) once it listens on `port`."""
    with log_path.open("wb") as log:
        process = subprocess.Popen([PYTHON, "-m", *argv], cwd=cwd, stdout=log,
                                   stderr=subprocess.STDOUT)
    if not wait_for_port(port, process, 30):
        stop_process(process)
        raise RuntimeError(f"{' '.join(argv)} did not start; its output: {log_path}")
    return process


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
        process.kill()


def serve_forward_only(port: int, upstream: str) -> None:
    """A gateway reduced to the relay (`limiter.relay.prepare` and `limiter.relay.forward`, no
    auth, no ledger): the protocol half's own cost on the same aiohttp server and client, so
    the figures can tell it from the limit check and the recording."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from limiter.metrics import LimiterMetrics
    from limiter.relay.forward import relay
    from limiter.relay.prepare import prepare_call
    from limiter.relay.registry import ROUTES
    from limiter.relay.upstreams import Upstreams
    from limiter.settings import LimiterSettings, UpstreamSettings

    settings = LimiterSettings(providers={
        name: UpstreamSettings(base_url=upstream, api_key=PROVIDER_KEY)
        for name in ("openai", "anthropic")})
    upstreams_key = web.AppKey("upstreams", Upstreams)
    by_path = {route.path: route for route in ROUTES}

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        route = by_path[request.path]
        call = prepare_call(route=route, upstream=request.app[upstreams_key].for_call(route, None),
                            request=request, body=json.loads(raw), raw_body=raw)
        return (await relay(call, request)).response

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        upstreams = Upstreams(settings, LimiterMetrics(CollectorRegistry(), (), ()))
        app[upstreams_key] = upstreams
        yield
        await upstreams.close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    for path in PATHS.values():
        app.router.add_post(path, handle)
    # On the limiter's own event loop, so the two gateways differ only in what they do.
    from agentmeter.runtime import event_loop_factory

    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
                loop=event_loop_factory("uvloop")())


@dataclass
class Target:
    url: str
    headers: dict[str, str]


async def call(session: aiohttp.ClientSession, target: Target, body: bytes,
               stream: bool) -> tuple[float, float]:
    """Total time and time to the first body byte of one call."""
    started = time.perf_counter()
    async with session.post(target.url, data=body, headers=target.headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{target.url}: HTTP {response.status}: {await response.text()}")
        chunk = await response.content.readany()
        first_byte = time.perf_counter() - started
        while chunk:
            chunk = await response.content.readany()
    return time.perf_counter() - started, first_byte


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def alternate(session: aiohttp.ClientSession, targets: dict[str, Target],
                    body: bytes, stream: bool, n: int) -> dict[str, list[tuple[float, float]]]:
    """n calls to each target, taking turns (the order rotates so none is always first)."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    names = list(targets)
    for i in range(n):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(await call(session, targets[name], body, stream))
    return times


async def throughput(session: aiohttp.ClientSession, target: Target, body: bytes, stream: bool,
                     concurrency: int, seconds: float) -> float:
    """Completed calls per second with `concurrency` callers for `seconds`."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call(session, target, body, stream)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


# Request bodies: "small" is about 2 KB of prompt, like a short agent turn; "agent" is what a
# coding agent sends each turn, ~430 KB (~100k tokens) of code in its context.
BODIES = ("small", "agent")
# Share of direct throughput (complete answers, c=32) the limiter must carry, per body.
THROUGHPUT_TARGETS = {"small": 20.0, "agent": 50.0}
AGENT_BODY_BYTES = 430_000


def agent_context() -> str:
    lines: list[str] = []
    size, n = 0, 0
    while size < AGENT_BODY_BYTES:
        line = (f"def handler_{n}(request, session):\n"
                f"    \"\"\"Answer request {n} from the session's cache.\"\"\"\n"
                f"    return session.get(request.key, default={n})\n\n")
        lines.append(line)
        size += len(line) + 8  # JSON escapes of the line ends
        n += 1
    return "Review this code and fix the failing test.\n\n" + "".join(lines)


def request_body(provider: str, stream: bool, size: str = "small") -> bytes:
    prompt = (agent_context() if size == "agent"
              else "Summarise the following notes. " + "lorem ipsum dolor sit amet " * 70)
    body: dict[str, object] = {"model": MODELS[provider], "stream": stream, "max_tokens": 512,
                               "messages": [{"role": "user", "content": prompt}]}
    return json.dumps(body).encode()


def added_ms(times: dict[str, list[tuple[float, float]]], name: str, q: float,
             part: int = 0) -> float:
    """How much later `name` is than direct at percentile q (part 0: total, 1: first byte)."""
    return (percentile([t[part] for t in times[name]], q)
            - percentile([t[part] for t in times["direct"]], q)) * 1000


# Per round and per path through a gateway ("limiter", "forward"): metric -> value.
Figures = dict[str, dict[str, float]]
LABELS = {"limiter": "through the limiter", "forward": "forward() alone"}


async def run_round(session: aiohttp.ClientSession, targets: dict[str, Target],
                    args: argparse.Namespace, number: int, pids: dict[str, int]) -> Figures:
    plain = request_body(args.provider, False, args.body)
    streamed = request_body(args.provider, True, args.body)
    # CPU per call tells the gateways' own cost apart from the machine's scheduling delays.
    meters = {"limiter main thread": (pids["limiter"], True),
              "limiter all threads": (pids["limiter"], False),
              "forward() alone": (pids["forward"], False)}
    cpu_before = {name: cpu_seconds(*meter) for name, meter in meters.items()}
    ledger_before = ledger_backend_cpu(args.pg_admin_url)
    c1 = await alternate(session, targets, plain, False, args.requests)
    cpu_per_call = {name: (cpu_seconds(*meter) - cpu_before[name]) / args.requests * 1000
                    for name, meter in meters.items()}
    ledger = ledger_cpu_by_client(ledger_before, ledger_backend_cpu(args.pg_admin_url))
    for client, used in sorted(ledger.items()):
        cpu_per_call[f"PostgreSQL for {client or 'unnamed'}"] = used / args.requests * 1000
    s1 = await alternate(session, targets, streamed, True, args.requests)
    rps: dict[str, dict[str, float]] = {"plain": {}, "stream": {}}
    names = list(targets)[::-1] if number % 2 else list(targets)
    for kind, body in (("plain", plain), ("stream", streamed)):
        for name in names:
            rps[kind][name] = await throughput(session, targets[name], body, kind == "stream",
                                               args.concurrency, args.seconds)
    figures: Figures = {}
    print(f"round {number}:")
    for name in LABELS:
        figures[name] = {
            "added latency p50 (c=1), ms": added_ms(c1, name, 50),
            "added latency p99 (c=1), ms": added_ms(c1, name, 99),
            "added stream TTFB p50, ms": added_ms(s1, name, 50, part=1),
            "throughput ratio plain, %": 100 * rps["plain"][name] / rps["plain"]["direct"],
            "throughput ratio stream, %": 100 * rps["stream"][name] / rps["stream"]["direct"],
        }
        print(f"  {LABELS[name]:20s} " + "  ".join(
            f"{label.split(',')[0].replace('added ', '+')} {value:6.2f}"
            for label, value in figures[name].items()))
    # The baseline itself: how fast the machine is right now (it drifts on shared hosts).
    direct = [t[0] for t in c1["direct"]]
    print(f"  direct at c=1      p50 {percentile(direct, 50) * 1000:.2f} ms  "
          f"p99 {percentile(direct, 99) * 1000:.2f} ms")
    print("  CPU per call at c=1 " + "  ".join(
        f"{name} {ms:.2f} ms" for name, ms in cpu_per_call.items()))
    for kind, rates in rps.items():
        print(f"  c={args.concurrency} {kind:6s} " + "  ".join(
            f"{name} {rate:7.0f}/s" for name, rate in rates.items()))
    sys.stdout.flush()
    return figures


async def memory_growth(session: aiohttp.ClientSession, limited: Target, provider: str,
                        pid: int, concurrency: int, seconds: float) -> tuple[int, int]:
    """RSS of the limiter before and after `seconds` of mixed load (it is warm already)."""
    before = rss_bytes(pid)
    bodies = [request_body(provider, False), request_body(provider, True)]
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            await call(session, limited, bodies[i % 2], bool(i % 2))
            i += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return before, rss_bytes(pid)


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):8.2f}  min {min(values):8.2f}  "
            f"max {max(values):8.2f}  spread {max(values) - min(values):7.2f}")


async def measure(args: argparse.Namespace, targets: dict[str, Target],
                  pids: dict[str, int]) -> bool:
    connector = aiohttp.TCPConnector(limit=args.concurrency * 3, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm = (request_body(args.provider, False, args.body),
                request_body(args.provider, True, args.body))
        for i in range(50):
            for target in targets.values():
                await call(session, target, warm[i % 2], bool(i % 2))
        rounds = [await run_round(session, targets, args, n, pids)
                  for n in range(1, args.rounds + 1)]
        print(f"\nacross {len(rounds)} rounds:")
        medians: dict[str, float] = {}
        for name, label in LABELS.items():
            print(f"  {label}:")
            for metric in rounds[0][name]:
                values = [r[name][metric] for r in rounds]
                print(f"    {metric:29s}{spread(values)}")
                if name == "limiter":
                    medians[metric] = statistics.median(values)
        before, after = await memory_growth(session, targets["limiter"], args.provider,
                                            pids["limiter"], args.concurrency,
                                            args.duration)
    growth = 100 * (after - before) / before
    print(f"  RSS of the limiter process: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB "
          f"after {args.duration:.0f} s at c={args.concurrency} ({growth:+.1f}%)")
    least_share = THROUGHPUT_TARGETS[args.body]
    checks = {
        "added p50 <= 1 ms": medians["added latency p50 (c=1), ms"] <= 1.0,
        "added p99 <= 5 ms": medians["added latency p99 (c=1), ms"] <= 5.0,
        "added TTFB p50 <= 2 ms": medians["added stream TTFB p50, ms"] <= 2.0,
        f"throughput ratio >= {least_share:.0f}%":
            medians["throughput ratio plain, %"] >= least_share,
        "RSS growth < 10%": growth < 10.0,
    }
    print("\ntargets (through the limiter): " + "  ".join(
        f"{name}: {'ok' if ok else 'MISSED'}" for name, ok in checks.items()))
    return all(checks.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="calls per kind at c=1")
    parser.add_argument("--seconds", type=float, default=3.0, help="throughput window")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="RSS growth window (s)")
    parser.add_argument("--provider", choices=sorted(PATHS), default="openai")
    parser.add_argument("--words", type=int, default=40, help="words per fake answer")
    parser.add_argument("--body", choices=BODIES, default="small", help="request body size")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--serve-forward-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_forward_only:
        serve_forward_only(args.port, args.upstream)
        return 0

    db_url, key = prepare_database(args.pg_admin_url)
    with tempfile.TemporaryDirectory(prefix="bench-limiter-") as tmp:
        workdir = Path(tmp)
        ports = {name: free_port() for name in ("fake", "limiter", "forward")}
        fake_url = f"http://127.0.0.1:{ports['fake']}"
        upstream = {"base_url": fake_url, "api_key": PROVIDER_KEY}
        config = {
            "database": {"url": db_url},
            "limiter": {"spool_dir": str(workdir / "spool"),
                        "providers": {"openai": upstream, "anthropic": upstream}},
            "log_level": "warning",
        }
        config_path = workdir / "agentmeter.yaml"
        config_path.write_text(yaml.safe_dump(config))
        commands = {
            "fake": ["tests.support.fake_upstream", "--port", str(ports["fake"]),
                     "--words", str(args.words)],
            "limiter": ["agentmeter", "limiter", "--listen", f"127.0.0.1:{ports['limiter']}",
                        "--config", str(config_path)],
            "forward": ["bench.limiter", "--serve-forward-only", "--port", str(ports["forward"]),
                        "--upstream", fake_url],
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, argv in commands.items():
                processes[name] = spawn(argv, ports[name], workdir / f"{name}.log")
            print(f"ports: {ports}  ledger {db_url}  provider {args.provider}\n")
            path = PATHS[args.provider]
            json_type = {"Content-Type": "application/json"}
            targets = {
                "direct": Target(f"{fake_url}{path}",
                                 {"Authorization": f"Bearer {PROVIDER_KEY}", **json_type}),
                "limiter": Target(f"http://127.0.0.1:{ports['limiter']}{path}",
                                  {"Authorization": f"Bearer {key}", **json_type}),
                "forward": Target(f"http://127.0.0.1:{ports['forward']}{path}", json_type),
            }
            ok = asyncio.run(measure(args, targets,
                                    {name: p.pid for name, p in processes.items()}))
        finally:
            for process in processes.values():
                stop_process(process)
            if not args.keep_db:
                drop_database(args.pg_admin_url)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
