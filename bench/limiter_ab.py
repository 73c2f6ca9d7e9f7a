"""Two builds of the limiter side by side: does a change make the gateway cheaper?

    .venv/bin/python -m bench.limiter_ab --baseline REF [--rounds 3] [--calls 1500] [--stream]
                                         [--body small|agent]

On a shared host the absolute figures of bench/limiter.py drift by 2x within an hour, far more
than most changes are worth. This runs the working tree's limiter and the one of git ref
`--baseline` (checked out into a temporary worktree) at the same time, on one ledger
(`bench_limiter_ab`, dropped and re-created) and one fake provider, and takes turns between
the provider itself and the two gateways, one call at a time on keep-alive connections. Per
round it prints each gateway's added latency (p50, p99; time to the first event with
`--stream`) and its CPU per call, of the main thread and of the whole process: CPU moves less
with the machine's speed than latency does. The two builds must share the ledger's schema.
Both run on this checkout's virtualenv: a baseline from before the standard HTTP stack (e9033bb
and older) needs `pip install httptools` there for the run (it is no dependency any more).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.limiter import (
    BODIES,
    MODELS,
    PATHS,
    PG_ADMIN_URL,
    PROVIDER_KEY,
    ROOT,
    cpu_seconds,
    drop_database,
    free_port,
    percentile,
    prepare_database,
    request_body,
    spawn,
    stop_process,
)

DB_NAME = "bench_limiter_ab"
GATEWAYS = ("baseline", "current")


@dataclass
class Target:
    name: str
    port: int
    key: str
    pid: int | None = None
    sock: socket.socket | None = None
    times: list[float] = field(default_factory=list)


def connect(target: Target) -> None:
    sock = socket.create_connection(("127.0.0.1", target.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    target.sock = sock


def call(target: Target, request: bytes, stream: bool) -> float:
    """Seconds until the whole answer (or, for a stream, its first event) has arrived."""
    sock = target.sock
    assert sock is not None
    started = time.perf_counter()
    sock.sendall(request)
    buffer = b""
    first_event: float | None = None
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"{target.name} closed the connection")
        buffer += chunk
        if stream:
            if first_event is None and b"data:" in buffer:
                first_event = time.perf_counter() - started
            if buffer.endswith(b"0\r\n\r\n"):
                assert first_event is not None
                return first_event
            continue
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            continue
        head = buffer[:head_end].lower()
        if not head.startswith(b"http/1.1 200"):
            raise RuntimeError(f"{target.name}: {buffer[:200]!r}")
        length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
        if len(buffer) >= head_end + 4 + length:
            return time.perf_counter() - started


def raw_request(target: Target, body: bytes) -> bytes:
    return (f"POST {PATHS['openai']} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n"
            f"Authorization: Bearer {target.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def cpu(pid: int) -> tuple[float, float]:
    return cpu_seconds(pid, main_thread_only=True), cpu_seconds(pid)


def run_round(targets: list[Target], body: bytes, stream: bool, calls: int, number: int
              ) -> dict[str, dict[str, float]]:
    requests = {t.name: raw_request(t, body) for t in targets}
    for target in targets:
        target.times = []
    before = {t.name: cpu(t.pid) for t in targets if t.pid is not None}
    for i in range(calls):
        shift = i % len(targets)
        for target in targets[shift:] + targets[:shift]:
            target.times.append(call(target, requests[target.name], stream))
    after = {t.name: cpu(t.pid) for t in targets if t.pid is not None}
    direct = targets[0].times
    figures: dict[str, dict[str, float]] = {}
    print(f"round {number}: direct p50 {percentile(direct, 50) * 1000:.3f} ms")
    for target in targets[1:]:
        name = target.name
        figures[name] = {
            "added p50, ms": (percentile(target.times, 50) - percentile(direct, 50)) * 1000,
            "added p99, ms": (percentile(target.times, 99) - percentile(direct, 99)) * 1000,
            "CPU main thread, ms/call": (after[name][0] - before[name][0]) / calls * 1000,
            "CPU all threads, ms/call": (after[name][1] - before[name][1]) / calls * 1000,
        }
        print(f"  {name:9s}" + "".join(f"  {label} {value:6.3f}"
                                      for label, value in figures[name].items()))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git ref to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1500, help="calls per gateway per round")
    parser.add_argument("--stream", action="store_true", help="time to the first event")
    parser.add_argument("--body", choices=BODIES, default="small", help="request body size")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    args = parser.parse_args(argv)

    db_url, key = prepare_database(args.pg_admin_url, DB_NAME)
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-limiter-ab-") as tmp:
        workdir = Path(tmp)
        tree = workdir / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.baseline],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            ports = {name: free_port() for name in ("fake", *GATEWAYS)}
            fake_url = f"http://127.0.0.1:{ports['fake']}"
            processes.append(spawn(["tests.support.fake_upstream", "--port",
                                    str(ports["fake"])], ports["fake"], workdir / "fake.log"))
            targets = [Target("direct", ports["fake"], PROVIDER_KEY)]
            for name in GATEWAYS:
                upstream = {"base_url": fake_url, "api_key": PROVIDER_KEY}
                config = {"database": {"url": db_url}, "log_level": "warning",
                          "limiter": {"spool_dir": str(workdir / f"spool-{name}"),
                                      "providers": {"openai": upstream}}}
                config_path = workdir / f"{name}.yaml"
                config_path.write_text(yaml.safe_dump(config))
                process = spawn(["agentmeter", "limiter", "--listen",
                                 f"127.0.0.1:{ports[name]}", "--config", str(config_path)],
                                ports[name], workdir / f"{name}.log",
                                cwd=tree if name == "baseline" else ROOT)
                processes.append(process)
                targets.append(Target(name, ports[name], key, process.pid))
            for target in targets:
                connect(target)
            body = request_body("openai", args.stream, args.body)
            assert json.loads(body)["model"] == MODELS["openai"]
            for target in targets:  # warm both gateways (catalog, prepared statements)
                for _ in range(100):
                    call(target, raw_request(target, body), args.stream)
            rounds = [run_round(targets, body, args.stream, args.calls, n)
                      for n in range(1, args.rounds + 1)]
        finally:
            for process in processes:
                stop_process(process)
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           check=False, capture_output=True)
            drop_database(args.pg_admin_url, DB_NAME)
    print(f"\nmedians over {len(rounds)} rounds ({args.calls} calls each"
          f"{', time to the first event' if args.stream else ''}):")
    for name in GATEWAYS:
        print(f"  {name:9s}" + "".join(
            f"  {label} {statistics.median(r[name][label] for r in rounds):6.3f}"
            for label in rounds[0][name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
