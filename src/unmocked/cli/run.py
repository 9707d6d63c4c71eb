"""``unmocked run -- COMMAND``: run any command with a database exported to it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from unmocked.errors import ConfigurationError
from unmocked.export.command import run_command
from unmocked.settings import Settings, parse_env_templates


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``unmocked run`` to the ``unmocked`` parser."""
    parser = commands.add_parser(
        "run",
        help="run a command with a fresh database in DATABASE_URL and the PG* variables",
        description="Find or start a server as the pytest plugin does, clone a migrated "
        "database, export it to COMMAND as DATABASE_URL, PGHOST, PGPORT, PGUSER, PGPASSWORD and "
        "PGDATABASE (plus --env templates; a variable that would be empty, such as PGPASSWORD for "
        "a server whose URL has no password, is left out), run COMMAND and pass its exit status "
        "through. "
        "Settings come from pyproject.toml ([tool.pytest.ini_options] unmocked_* keys and "
        "[tool.unmocked]) or pytest.ini, and UNMOCKED_* variables.",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=TEMPLATE",
        help="also export NAME, filled from {host} {port} {user} {password} {database} {url} "
        "{url:DRIVER}; repeatable",
    )
    parser.add_argument("--migrations", help="what builds the schema (as unmocked_migrations)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ConfigurationError(
            "unmocked run needs a command to run, for example: unmocked run -- pytest -x"
        )
    if settings.env_database == "per-worker":
        # Read by the pytest option only: said, so that a suite's shared database is no surprise.
        print(
            "unmocked run: unmocked_env_database = per-worker is for the pytest option "
            "(unmocked_export_env); unmocked run exports one database to the whole command. For "
            "a database per xdist worker, run: UNMOCKED_EXPORT_ENV=true pytest -n 2",
            file=sys.stderr,
        )
    return run_command(settings, command, parse_env_templates("\n".join(args.env)))
