"""`agentmeter coder …`: sync users and groups from Coder, import Coder's retired limits."""

from __future__ import annotations

import argparse
import asyncio

from agentmeter.config import load_config
from coder.sync import sync_once
from ledger.engine import create_sync_engine


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
