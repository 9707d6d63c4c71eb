"""The ``unmocked`` command: look at what unmocked would use, run suites, keep a server up.

``unmocked doctor``
    Which providers exist here, and which one ``auto`` picks.
``unmocked gc [--templates]``
    Drop databases left behind by runs that are no longer alive.
``unmocked run -- COMMAND``
    Run any command with a migrated database in ``DATABASE_URL`` and the libpq variables.
``unmocked up`` / ``down`` / ``status``
    A server that outlives test runs, which later runs attach to.
``unmocked psql NAME``
    Open a database, such as one kept for a failed test, in psql.

Each command is a module of this package with ``register(commands)``, which adds its sub-parser
with a ``handler`` default: a function of ``(args, settings)`` returning the exit status. Here the
parser is put together and the project's settings are read once, as pytest would read them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from unmocked.cli import doctor, gc, psql, run, server
from unmocked.errors import UnmockedError
from unmocked.settings import Settings, project_ini

COMMANDS = (doctor, gc, run, server, psql)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unmocked", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", help="auto (default), url, embedded or local")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    args = parser.parse_args(argv)
    try:
        # Commands read the project's settings as pytest would: the same server, the same template.
        root, ini = project_ini(Path.cwd())
        flags = {
            "unmocked_provider": args.provider,
            "unmocked_migrations": getattr(args, "migrations", None),
        }
        settings = Settings.from_values(flags, os.environ, root, ini)
        status: int = args.handler(args, settings)
        return status
    except UnmockedError as error:
        print(f"unmocked: {error}", file=sys.stderr)
        return 1
