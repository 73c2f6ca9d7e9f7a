"""`agentmeter …`: one entry point; every error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import psycopg
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from agentmeter import coder_commands, commands
from agentmeter.config import ConfigError
from coder.client import CoderError
from ledger.errors import LedgerError

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An operator mistake, worded for the terminal."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="YAML config file (default: $AGENTMETER_CONFIG, then built-ins)")

    parser = argparse.ArgumentParser(prog="agentmeter", parents=[common],
                                     description="Watch and cap what AI coding agents cost.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
                parent: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:  # type: ignore[type-arg]
        p = (parent or sub).add_parser(name, parents=[common], help=help_text,
                                       description=help_text)
        p.set_defaults(handler=handler)
        return p

    command("serve", commands.serve, "run the limiter and the exporter in one process")
    p = command("limiter", commands.limiter, "run the limiter (the LLM gateway)")
    p.add_argument("--listen", metavar="HOST:PORT", default=None)
    p = command("exporter", commands.exporter, "run the Prometheus exporter")
    p.add_argument("--listen", metavar="HOST:PORT", default=None)

    db = sub.add_parser("db", help="ledger database maintenance").add_subparsers(
        dest="db_command", required=True, metavar="COMMAND")
    command("upgrade", commands.db_upgrade, "migrate the ledger to the latest schema", db)
    p = command("prune", commands.db_prune,
                "remove messages older than ledger.message_retention_days", db)
    p.add_argument("--dry-run", action="store_true",
                   help="say how many messages and which dates would go, remove nothing")

    p = command("apply", commands.apply, "make the ledger equal a policy file")
    p.add_argument("-f", "--file", required=True, metavar="FILE")
    p.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")

    keys = sub.add_parser("keys", help="virtual API keys").add_subparsers(
        dest="keys_command", required=True, metavar="COMMAND")
    p = command("create", commands.keys_create, "create a key (shown once, last line)", keys)
    p.add_argument("user")
    p = command("list", commands.keys_list, "list keys (never the keys themselves)", keys)
    p.add_argument("user", nargs="?")
    p = command("revoke", commands.keys_revoke, "revoke all of a user's keys, or one", keys)
    p.add_argument("user")
    p.add_argument("--key-id", metavar="ID")

    p = command("usage", commands.usage, "per-user cost table")
    p.add_argument("--from", dest="start", metavar="DATE", help="start (default: 30 days ago)")
    p.add_argument("--to", dest="end", metavar="DATE", help="end, exclusive (default: now)")
    p.add_argument("--search", metavar="TEXT", help="match username or display name")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--per-page", type=int, default=50)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("prices", commands.prices, "a model's prices now and where they come from")
    p.add_argument("model", help="a model's name or one of its aliases")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    coder = sub.add_parser("coder", help="Coder integration").add_subparsers(
        dest="coder_command", required=True, metavar="COMMAND")
    p = command("sync", coder_commands.coder_sync,
                "make the ledger's users, groups and memberships equal Coder's", coder)
    p.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
    p = command("import", coder_commands.coder_import,
                "write a policy file from a Coder database's native chat limits (read-only)",
                coder)
    p.add_argument("--database-url", required=True, metavar="URL",
                   help="the Coder database, postgresql://user:pass@host:5432/coder")
    p.add_argument("--out", metavar="FILE", help="write the policy here (default: stdout)")
    p.add_argument("--usage-since", metavar="DATE",
                   help="also copy chat messages from DATE on into the ledger (idempotent)")

    dash = sub.add_parser("dashboards", help="Grafana dashboards").add_subparsers(
        dest="dash_command", required=True, metavar="COMMAND")
    p = command("build", commands.dashboards_build, "write the dashboard JSON files", dash)
    p.add_argument("--out", required=True, metavar="DIR")
    return parser


def _database_problem(exc: SQLAlchemyError) -> str:
    text = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else repr(exc)
    if "no such table" in text or ("does not exist" in text and "relation" in text):
        return "the ledger has no tables yet: run `agentmeter db upgrade` first"
    return f"database error: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except (ConfigError, LedgerError, CliError, CoderError, ValueError) as exc:
        message = str(exc)
    except (OperationalError, ProgrammingError) as exc:
        message = _database_problem(exc)
    except psycopg.Error as exc:  # the Coder database of `coder import`
        message = f"Coder database: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}"
    except SQLAlchemyError as exc:
        message = f"database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
    except KeyboardInterrupt:
        return 130
    print(f"agentmeter: error: {message}", file=sys.stderr)
    return EXIT_ERROR
