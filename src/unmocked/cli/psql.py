"""``unmocked psql NAME``: open a database a failed test left behind, in psql.

The server is found as the plugin finds it (the same provider chain and settings); a server this
command starts itself runs until psql exits, on the same cached cluster the run used, so the
database kept there is still in it. psql is the one next to the server's binaries when unmocked
runs them, else the one on ``PATH``. The password, if any, goes to psql in ``PGPASSWORD``, never
on its command line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from unmocked import ownership
from unmocked.errors import DatabaseError
from unmocked.servers import Server, binaries, wheels
from unmocked.session import UnmockedSession
from unmocked.settings import Settings
from unmocked.urls import with_database


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``psql`` to the ``unmocked`` parser."""
    parser = commands.add_parser(
        "psql", help="open a database in psql, such as one kept for a failed test"
    )
    parser.add_argument("name", help="the database, as the run's summary names it")
    parser.add_argument(
        "psql_args",
        nargs=argparse.REMAINDER,
        help="passed on to psql, for example -c 'SELECT ...'",
    )
    parser.set_defaults(handler=open_psql)


def open_psql(args: argparse.Namespace, settings: Settings) -> int:
    """Run psql on database ``args.name`` of the server; return psql's exit status."""
    with UnmockedSession(settings) as session:
        server = session.server
        with psycopg.connect(server.url, autocommit=True) as conn:
            if _missing(conn, args.name):
                raise DatabaseError(_not_found(conn, args.name, server))
        params = conninfo_to_dict(with_database(server.url, args.name))
        env = dict(os.environ)
        password = params.pop("password", None)
        if password:
            env["PGPASSWORD"] = str(password)
        return subprocess.call(
            [_psql(server, settings), make_conninfo("", **params), *args.psql_args], env=env
        )


def _missing(conn: ownership.AdminConnection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is None


def _not_found(conn: ownership.AdminConnection, name: str, server: Server) -> str:
    kept = [found for found, owner in ownership.our_databases(conn) if owner.kind == "kept"]
    listing = (
        f" Kept databases there: {', '.join(kept)}." if kept else " No database is kept there."
    )
    return (
        f"no database {name!r} on {server.describe()}.{listing} A run keeps the database of a "
        "failed pg_url test; `unmocked gc` (or a run a day later) drops it."
    )


def _psql(server: Server, settings: Settings) -> str:
    """The psql next to the binaries unmocked runs the server from, else the one on PATH."""
    bindir: Path | None = None
    if server.provider == "embedded":
        wheel = wheels.of_distribution(server.distribution, server.major)
        bindir = wheel.bindir if wheel else None
    elif server.provider == "local":
        bindirs = binaries.local_bindirs(settings.pg_version)
        bindir = bindirs[0] if bindirs else None
    if bindir is not None and (bindir / "psql").is_file():
        return str(bindir / "psql")
    found = shutil.which("psql")
    if found is None:
        raise DatabaseError(
            "psql is not on PATH. Install PostgreSQL's client (apt-get install "
            "postgresql-client, or brew install libpq) and run again."
        )
    return found
