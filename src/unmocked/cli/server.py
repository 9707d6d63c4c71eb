"""``unmocked up`` / ``down`` / ``status``: a server that outlives a test run.

Later runs with the same cache folder (and settings that fit it) attach to the ``up`` server
instead of starting their own, so they skip initdb, the server's start and, once built, the
templates. See :mod:`unmocked.servers.persistent`.
"""

from __future__ import annotations

import argparse
from typing import Any

import psycopg

from unmocked import fleet, ownership
from unmocked.cli import fleet_status
from unmocked.errors import ConfigurationError
from unmocked.servers import persistent
from unmocked.session_names import own_application_name
from unmocked.settings import Settings
from unmocked.urls import redact


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``up``, ``down`` and ``status`` to the ``unmocked`` parser."""
    commands.add_parser(
        "up", help="start a PostgreSQL server that later test runs attach to"
    ).set_defaults(handler=lambda args, settings: up(settings))
    commands.add_parser("down", help="stop the server `unmocked up` started").set_defaults(
        handler=lambda args, settings: down(settings)
    )
    commands.add_parser(
        "status",
        help="show the server (UNMOCKED_DATABASE_URL's, else the one `unmocked up` started), "
        "its runs, databases, templates and connections (exit status 1 when none runs)",
    ).set_defaults(handler=lambda args, settings: status(settings))


def up(settings: Settings) -> int:
    """Start the server, or say which one already runs."""
    if settings.database_url:
        raise ConfigurationError(
            "UNMOCKED_DATABASE_URL is set, so runs use that server and would never attach to one "
            "`unmocked up` starts. Unset it to use `unmocked up`."
        )
    record, started = persistent.up(settings)
    server = record.server
    if started:
        print(f"unmocked up: started {server.describe()}")
    else:
        print(f"unmocked up: already running: {server.describe()}")
    print(f"  url: {redact(server.url)}  pid: {record.pid}{_container(record)}")
    if not record.fits(settings):
        print("  It was started with other settings, so runs with these settings start their own.")
    print("Test runs with this cache folder use it until `unmocked down`.")
    return 0


def down(settings: Settings) -> int:
    """Stop the server; stopping none is not an error (the wanted state holds)."""
    record = persistent.down(settings)
    if record is None:
        _say_none_runs("down", settings)
    else:
        done = "removed" if record.container else "stopped"
        how = f"container {record.container[:12]}" if record.container else f"pid {record.pid}"
        print(f"unmocked down: {done} {record.server.describe()} ({how})")
    return 0


def status(settings: Settings) -> int:
    """Describe the server given by URL, or the ``up`` server, and what the runs hold on it;
    exit status 1 when neither is there, for scripts to test."""
    if settings.database_url:
        return _shared_status(settings.database_url)
    record = persistent.find(settings)
    if record is None:
        _say_none_runs("status", settings)
        return 1
    server = record.server
    fits = (
        "yes" if record.fits(settings) else "no (other provider, version, image or server settings)"
    )
    print(f"provider:   {server.provider}")
    print(f"version:    PostgreSQL {server.version}")
    print(f"url:        {redact(server.url)}")
    print(f"pid:        {record.pid}")
    if record.container:
        print(f"container:  {record.container[:12]} (image {server.image}, data on tmpfs)")
    else:
        print(f"data dir:   {server.data_dir}")
    print(f"uptime:     {_duration(persistent.uptime(record))}")
    print(f"databases:  {_database_counts(server.url)}")
    print(f"runs attach: {fits}")
    listing = _listing(server.url)
    if listing:
        print()
        print("\n".join(listing))
    return 0


def _shared_status(url: str) -> int:
    """``status`` of a server by ``UNMOCKED_DATABASE_URL``, which many machines' runs may share."""
    listing = _listing(url)
    if listing is None:
        return 1
    print(f"server:     {redact(url)} (UNMOCKED_DATABASE_URL)")
    print("\n".join(listing))
    return 0


def _listing(url: str) -> list[str] | None:
    """The runs, databases, templates and connections on ``url``'s server; None (said why) when
    it does not answer."""
    try:
        with psycopg.connect(
            url, autocommit=True, connect_timeout=5, application_name=own_application_name()
        ) as conn:
            version = conn.info.parameter_status("server_version") or "?"
            return [f"version:    PostgreSQL {version}", *fleet_status.lines(fleet.look(conn))]
    except psycopg.Error as error:
        print(f"unmocked status: {redact(url)} does not answer: {redact(str(error)).strip()}")
        return None


def _container(record: persistent.Record) -> str:
    return f"  container: {record.container[:12]}" if record.container else ""


def _database_counts(url: str) -> str:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            kinds = [owner.kind for _, owner in ownership.our_databases(conn)]
    except psycopg.Error as error:
        return f"unknown ({redact(str(error)).strip()})"
    templates = kinds.count("template")
    return f"{templates} template(s), {len(kinds) - templates} other unmocked database(s)"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min {seconds} s" if hours else f"{minutes} min {seconds} s"


def _say_none_runs(command: str, settings: Settings) -> None:
    print(
        f"unmocked {command}: no server started by `unmocked up` runs (cache {settings.cache_dir})"
    )
