"""What each CLI command does; `agentmeter.cli` parses arguments and reports errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from agentmeter.config import Config, load_config
from agentmeter.timeparse import parse_instant, rfc3339
from ledger.engine import create_sync_engine
from ledger.keys import create_key, list_keys, revoke_keys
from ledger.migrate import upgrade
from ledger.model_prices import ModelPrices, model_prices
from ledger.money import format_usd, usd_decimal
from ledger.policy_apply import apply_policy
from ledger.policy_file import load_policy
from ledger.price_versions import PriceVersion
from ledger.pricing import price_list
from ledger.prune import PrunePlan, maintain, plan_prune
from ledger.reports import DEFAULT_RANGE, CostTablePage, cost_table


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def db_upgrade(args: argparse.Namespace) -> int:
    config = _config(args)
    upgrade(config.database.url)
    print("ledger schema is up to date")
    return 0


def _pruned_span(plan: PrunePlan) -> str:
    assert plan.kept_since is not None
    span = (f" created {plan.first:%Y-%m-%d %H:%M} to {plan.last:%Y-%m-%d %H:%M} UTC"
            if plan.first is not None and plan.last is not None else "")
    return (f"{plan.messages} messages{span} (everything before "
            f"{plan.kept_since:%Y-%m-%d %H:%M} UTC); rollups, totals and chats are kept")


def db_prune(args: argparse.Namespace) -> int:
    config = _config(args)
    days = config.ledger.message_retention_days
    if days == 0:
        raise ValueError("ledger.message_retention_days is 0 (keep every message): set it "
                         "(e.g. AGENTMETER_LEDGER_MESSAGE_RETENTION_DAYS=400) to prune")
    now = datetime.now(UTC)
    engine = create_sync_engine(config.database)
    try:
        if args.dry_run:
            with engine.connect() as conn:
                plan: PrunePlan | None = plan_prune(conn, days, now)
        else:
            plan = maintain(engine, config.ledger, now)
    finally:
        engine.dispose()
    if plan is None:
        raise ValueError("another agentmeter process is pruning this ledger right now; "
                         "try again when it is done")
    if plan.kept_since is None:
        print(f"nothing to prune: no message is older than the retention of {days} days")
    else:
        print(("would remove " if args.dry_run else "removed ") + _pruned_span(plan))
    return 0


def apply(args: argparse.Namespace) -> int:
    config = _config(args)
    policy = load_policy(args.file)
    engine = create_sync_engine(config.database)
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            changes = apply_policy(conn, policy)
            if args.dry_run:
                transaction.rollback()
            else:
                transaction.commit()
    finally:
        engine.dispose()
    verb = "would change" if args.dry_run else "changed"
    for change in changes:
        print(("~ " if args.dry_run else "") + change)
    print(f"{len(changes)} {verb}" if changes else "nothing to change")
    return 0


def keys_create(args: argparse.Namespace) -> int:
    engine = create_sync_engine(_config(args).database)
    try:
        with engine.begin() as conn:
            key = create_key(conn, args.user)
    finally:
        engine.dispose()
    print(f"created key {key.key_id} for {key.username}; it is shown only once:")
    print(key.secret)
    return 0


def keys_list(args: argparse.Namespace) -> int:
    engine = create_sync_engine(_config(args).database)
    try:
        with engine.connect() as conn:
            keys = list_keys(conn, args.user)
    finally:
        engine.dispose()
    print(f"{'KEY ID':<18} {'USER':<24} {'PREFIX':<10} {'CREATED':<21} STATUS")
    for key in keys:
        status = "active" if key.revoked_at is None else f"revoked {rfc3339(key.revoked_at)}"
        print(f"{key.key_id:<18} {key.username:<24} {key.prefix:<10} "
              f"{rfc3339(key.created_at.replace(microsecond=0)):<21} {status}")
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    engine = create_sync_engine(_config(args).database)
    try:
        with engine.begin() as conn:
            count = revoke_keys(conn, args.user, args.key_id)
    finally:
        engine.dispose()
    if args.key_id and count == 0:
        raise ValueError(f"no active key {args.key_id!r} for user {args.user!r}")
    print(f"revoked {count} key{'s' if count != 1 else ''} of {args.user}")
    return 0


def _page_json(page: CostTablePage) -> dict[str, object]:
    return {
        "from": rfc3339(page.start), "to": rfc3339(page.end), "page": page.page,
        "per_page": page.per_page, "total": page.total,
        "users": [{"username": row.username, "name": row.name,
                   "cost_micros": row.totals.cost_micros,
                   "cost_usd": f"{row.totals.cost_micros / 1_000_000:.6f}",
                   "messages": row.totals.messages, "chats": row.totals.chats,
                   "input_tokens": row.totals.input_tokens,
                   "output_tokens": row.totals.output_tokens,
                   "cache_read_tokens": row.totals.cache_read_tokens,
                   "cache_write_tokens": row.totals.cache_write_tokens}
                  for row in page.rows],
    }


def _print_table(page: CostTablePage) -> None:
    header = ("USER", "NAME", "COST", "MESSAGES", "CHATS", "INPUT", "OUTPUT", "CACHE READ",
              "CACHE WRITE")
    rows = [(r.username, r.name, format_usd(r.totals.cost_micros), str(r.totals.messages),
             str(r.totals.chats), str(r.totals.input_tokens), str(r.totals.output_tokens),
             str(r.totals.cache_read_tokens), str(r.totals.cache_write_tokens))
            for r in page.rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    for line in (header, *rows):
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
        print("  ".join(cells).rstrip())
    print(f"{page.start:%Y-%m-%d %H:%M} to {page.end:%Y-%m-%d %H:%M} UTC; "
          f"page {page.page}, {len(page.rows)} of {page.total} users")


def usage(args: argparse.Namespace) -> int:
    config = _config(args)
    end = parse_instant(args.end, end_of_day=True) if args.end else datetime.now(UTC)
    start = parse_instant(args.start) if args.start else end - DEFAULT_RANGE
    if end <= start:
        raise ValueError("--to must be after --from")
    engine = create_sync_engine(config.database)
    try:
        with engine.connect() as conn:
            page = cost_table(conn, start, end, args.search, args.page, args.per_page)
    finally:
        engine.dispose()
    return _show(args, lambda: _page_json(page), lambda: _print_table(page))


def _show(args: argparse.Namespace, document: Callable[[], object],
          text: Callable[[], None]) -> int:
    """`--json`: the document, indented; otherwise the text for people."""
    if args.json:
        json.dump(document(), sys.stdout, indent=2)
        print()
    else:
        text()
    return 0


def _prices_json(found: ModelPrices) -> dict[str, object]:
    def version(v: PriceVersion) -> dict[str, object]:
        return {"effective_from": rfc3339(v.effective_from), "source": v.source,
                "source_detail": v.source_detail,
                "prices": {} if v.sheet is None else {
                    label: str(usd_decimal(micros))
                    for label, micros in price_list(v.sheet)}}

    return {"model": found.model.name, "provider": found.model.provider,
            "aliases": list(found.model.aliases),
            "current": None if found.current is None else version(found.current),
            "upcoming": [version(v) for v in found.upcoming]}


def _print_prices(found: ModelPrices) -> None:
    model = found.model
    print(f"model {model.name} ({model.provider})")
    for title, v in [("current", found.current), *(("upcoming", u) for u in found.upcoming)]:
        if v is None:
            print("  unpriced: no prices")
            continue
        print(f"  {title}: from {rfc3339(v.effective_from)}, {v.source} "
              f"({v.source_detail})")
        if v.sheet is None or not v.sheet.base.is_usable:
            print("    unpriced (pricing: none)")
            continue
        for label, micros in price_list(v.sheet):
            unit = "USD per 1,000" if label.endswith(" per 1k") else "USD per 1M tokens"
            print(f"    {label.removesuffix(' per 1k'):<36} {usd_decimal(micros)} {unit}")


def prices(args: argparse.Namespace) -> int:
    config = _config(args)
    engine = create_sync_engine(config.database)
    try:
        with engine.connect() as conn:
            found = model_prices(conn, args.model, datetime.now(UTC))
    finally:
        engine.dispose()
    return _show(args, lambda: _prices_json(found), lambda: _print_prices(found))


def dashboards_build(args: argparse.Namespace) -> int:
    from dashboards.build import build_all

    for path in build_all(Path(args.out)):
        print(path)
    return 0


def limiter(args: argparse.Namespace) -> int:
    from agentmeter.runtime import run_limiter

    return run_limiter(_config(args), args.listen)


def exporter(args: argparse.Namespace) -> int:
    from agentmeter.runtime import run_exporter

    return run_exporter(_config(args), args.listen)


def serve(args: argparse.Namespace) -> int:
    from agentmeter.runtime import run_serve

    return run_serve(_config(args))
