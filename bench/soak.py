"""The release gate's soak run: hours of production compressed into minutes, with faults.

    .venv/bin/python -m bench.soak [--duration 180] [--rate 300] [--workdir DIR]

Two `agentmeter limiter` processes and one `agentmeter exporter` on a PostgreSQL cluster of the
run's own (pg_createcluster; the shared server is never touched), a fault-injecting fake provider,
Prometheus with time-scaled copies of the project's rules and Alertmanager with a webhook. Under
`--rate` requests a second from 200 users with limits, PostgreSQL is stopped for 30 s, a limiter
is SIGKILLed twice (once with a full spool) and restarted, the provider fails in every way it can
and clients abort streams. The scenario lives in tests/support/soak.py (the test suite runs a
short version of it); this prints its summary and exits non-zero when a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.support.soak import bench_plan, run_soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=300.0, help="requests started per second")
    parser.add_argument("--workdir", type=Path, help="keep logs and spools here")
    args = parser.parse_args(argv)
    plan = bench_plan(args.duration, args.rate)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        report = asyncio.run(run_soak(plan, workdir, log=True))
    print()
    for line in report.lines():
        print(line)
    print("by start time (5 s slices):")
    for line in report.timeline():
        print(line)
    return 0 if not report.problems() else 1


if __name__ == "__main__":
    sys.exit(main())
