"""A server someone else runs, named by ``UNMOCKED_DATABASE_URL`` (a CI service, a shared server).

unmocked only creates and drops its own databases there; it never stops or tunes that server.
Attaching checks, once, what every later step needs: the server answers, is of the major
``unmocked_pg_version`` pins (when set), the role may create databases, and its sessions may write
(a read-only role or a standby would only fail later, at the first ``CREATE DATABASE``).
"""

from __future__ import annotations

import time

import psycopg

from unmocked.errors import ConfigurationError, ServerError
from unmocked.servers import RunningServer, Server
from unmocked.urls import redact

# Where a read-only default comes from (pg_settings.source), as the words and the fix for people.
_READ_ONLY_BECAUSE = {
    "user": ("set for role {role}", "Run ALTER ROLE {role} RESET {name} as an admin"),
    "database": (
        "set for database {database}",
        "Run ALTER DATABASE {database} RESET {name} as an admin",
    ),
    "database user": (
        "set for role {role} in database {database}",
        "Run ALTER ROLE {role} IN DATABASE {database} RESET {name} as an admin",
    ),
    "client": ("set by the connection's options", "Remove it from the URL's options or PGOPTIONS"),
}
_READ_ONLY_ELSEWHERE = (
    "set in the server's configuration",
    "Set {name} = off there (ALTER SYSTEM RESET {name}; SELECT pg_reload_conf())",
)


# What a server says to a connection beyond its limit (SQLSTATE 53300, which psycopg does not
# give for a failed connect).
_FULL_MESSAGES = ("too many clients already", "remaining connection slots are reserved")


def refused_for_want_of_a_slot(error: psycopg.Error) -> bool:
    """Whether ``error`` is the server refusing a connection because its slots are all taken."""
    return error.sqlstate == "53300" or any(text in str(error) for text in _FULL_MESSAGES)


def attach(
    url: str, pg_version: int | None = None, other_major: bool = False, wait: float = 0.0
) -> RunningServer:
    """Check that ``url`` answers, is of major ``pg_version`` (``unmocked_pg_version``, when
    set), may create databases and may write; describe its server.

    ``other_major`` (``unmocked_pg_version_mismatch = warn``): a server of another major is used
    instead of refused, and the run's header says so (:attr:`Server.reason`: a line every run
    prints, also under xdist, where a Python warning raised before the first test could only end
    the session under ``-W error``). ``wait``: seconds to try again while the server refuses the
    connection for want of a free slot (``unmocked_connection_wait``)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return _attach(url, pg_version, other_major)
        except _Full:
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"UNMOCKED_DATABASE_URL ({redact(url)}) has no connection free after "
                    f"{wait:g} s: the server refuses new connections, all its slots are in use "
                    "(max_connections). Close connections, raise max_connections, or set "
                    "unmocked_max_connections for the runs that share the server."
                ) from None
        time.sleep(0.2)


class _Full(Exception):
    """The server refused the connection for want of a slot."""


def _attach(url: str, pg_version: int | None, other_major: bool) -> RunningServer:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), "
                "current_setting('server_version_num')::int / 10000, "
                "rolcreatedb OR rolsuper, pg_is_in_recovery(), "
                "current_setting('transaction_read_only') = 'on', "
                "(SELECT source FROM pg_settings WHERE name = 'default_transaction_read_only') "
                "FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            assert row is not None
            version, major, may_create, standby, read_only, read_only_source = row
            if read_only and not standby:
                raise ServerError(_read_only_role(url, conn, str(read_only_source)))
    except psycopg.Error as error:
        if refused_for_want_of_a_slot(error):
            raise _Full() from None
        raise ServerError(
            f"UNMOCKED_DATABASE_URL ({redact(url)}) does not answer: "
            f"{redact(str(error)).strip()}. Check that the server runs and the URL is right."
        ) from None
    reason = None
    if pg_version is not None and int(major) != pg_version and other_major:
        reason = (
            f"unmocked_pg_version = {pg_version}, but UNMOCKED_DATABASE_URL is PostgreSQL "
            f"{str(version).split()[0]}: testing on {major}, not on the version the project pins "
            "(unmocked_pg_version_mismatch = warn)"
        )
    elif pg_version is not None and int(major) != pg_version:
        raise ConfigurationError(
            f"unmocked_pg_version = {pg_version}, but UNMOCKED_DATABASE_URL ({redact(url)}) is "
            f"PostgreSQL {str(version).split()[0]}, so the tests would not run on the version "
            f"the project pins. Point UNMOCKED_DATABASE_URL at a PostgreSQL {pg_version} "
            f"server, set unmocked_pg_version = {major} to test on this one, or unset "
            f"UNMOCKED_DATABASE_URL and unmocked starts a PostgreSQL {pg_version} of its own "
            "(unmocked_provider = auto), or set unmocked_pg_version_mismatch = warn to test on "
            "it anyway."
        )
    if standby:
        raise ServerError(
            f"UNMOCKED_DATABASE_URL ({redact(url)}) is a standby server (in recovery, so "
            "read-only), and unmocked creates its databases there. Point it at the primary, or "
            "at a server of the tests' own."
        )
    if not may_create:
        raise ServerError(
            f"UNMOCKED_DATABASE_URL ({redact(url)}) connects as a role that may not create "
            "databases. Give it CREATEDB (ALTER ROLE ... CREATEDB) or use an admin URL."
        )
    return RunningServer(
        Server(
            url=url,
            version=str(version).split()[0],
            major=int(major),
            provider="url",
            reason=reason,
        )
    )


def _read_only_role(url: str, conn: psycopg.Connection[tuple[object, ...]], source: str) -> str:
    """The paragraph for a role whose sessions start read-only: where that is set, and the fix."""
    # quote_ident quotes only what SQL needs quoted, so the fix reads as one would type it.
    names = conn.execute("SELECT quote_ident(current_user), quote_ident(current_database())")
    row = names.fetchone()
    assert row is not None
    role, database = (str(name) for name in row)
    where, fix = _READ_ONLY_BECAUSE.get(source, _READ_ONLY_ELSEWHERE)
    name = "default_transaction_read_only"
    fields = {"role": role, "database": database, "name": name}
    return (
        f"UNMOCKED_DATABASE_URL ({redact(url)}) connects as {role}, whose sessions are "
        f"read-only ({name} = on, {where.format(**fields)}), and unmocked creates its databases "
        f"there. {fix.format(**fields)}, or point UNMOCKED_DATABASE_URL at a role that may write."
    )
