"""`agentmeter coder …`: sync users and groups from Coder, import Coder's retired limits."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import yaml

from agentmeter.config import load_config
from agentmeter.timeparse import parse_instant, rfc3339
from coder.importer import connect_read_only, copy_usage, policy_document, read_native_limits
from coder.sync import sync_once
from ledger.engine import create_sync_engine
from ledger.money import format_usd


def coder_sync(args: argparse.Namespace) -> int:
    config = load_config(getattr(args, "config", None))
    engine = create_sync_engine(config.database)
    try:
        changes = asyncio.run(sync_once(config.coder, engine, dry_run=args.dry_run))
    finally:
        engine.dispose()
    if changes is None:
        raise ValueError("another coder sync is running; try again when it has finished")
    for change in changes:
        print(("~ " if args.dry_run else "") + change)
    verb = "would change" if args.dry_run else "changed"
    print(f"{len(changes)} {verb}" if changes else "nothing to change")
    return 0


_HEADER = ("# Written by `agentmeter coder import` from Coder's native chat usage limits.\n"
           "# Apply with `agentmeter apply -f FILE`; review the models' prices first.\n")


def coder_import(args: argparse.Namespace) -> int:
    config = load_config(getattr(args, "config", None))
    since = parse_instant(args.usage_since) if args.usage_since else None
    with connect_read_only(args.database_url) as source:
        native = read_native_limits(source)
        copied = None
        if since is not None:
            engine = create_sync_engine(config.database)
            try:
                copied = copy_usage(source, engine, since)
            finally:
                engine.dispose()
    text = _HEADER + yaml.safe_dump(policy_document(native), sort_keys=False,
                                    allow_unicode=True)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    for note in native.notes:
        print(f"agentmeter: not carried: {note}", file=sys.stderr)
    report = sys.stdout if args.out else sys.stderr
    if args.out:
        print(f"wrote {args.out}: {len(native.users)} users, {len(native.groups)} groups, "
              f"{len(native.models)} models", file=report)
    if copied is not None and since is not None:
        print(f"copied {copied.messages} messages ({format_usd(copied.cost_micros)} as Coder "
              f"billed them) since {rfc3339(since)}; {copied.already} were already in the "
              "ledger", file=report)
    return 0
