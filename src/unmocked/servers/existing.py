"""A server someone else runs, named by ``UNMOCKED_DATABASE_URL`` (a CI service, a shared server).

unmocked only creates and drops its own databases there; it never stops or tunes that server.
"""

from __future__ import annotations

import psycopg

from unmocked.errors import ServerError
from unmocked.servers import RunningServer, Server
from unmocked.urls import redact


def attach(url: str) -> RunningServer:
    """Check that ``url`` answers and may create databases; describe the server behind it."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), "
                "current_setting('server_version_num')::int / 10000, "
                "rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as error:
        raise ServerError(
            f"UNMOCKED_DATABASE_URL ({redact(url)}) does not answer: "
            f"{redact(str(error)).strip()}. Check that the server runs and the URL is right."
        ) from None
    assert row is not None
    version, major, may_create = row
    if not may_create:
        raise ServerError(
            f"UNMOCKED_DATABASE_URL ({redact(url)}) connects as a role that may not create "
            "databases. Give it CREATEDB (ALTER ROLE ... CREATEDB) or use an admin URL."
        )
    return RunningServer(
        Server(url=url, version=str(version).split()[0], major=int(major), provider="url")
    )
