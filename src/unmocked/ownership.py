"""Which databases unmocked created, and whether the run that created them is still alive.

Every database unmocked creates has a name starting with ``unmocked_`` *and* a comment recording
what it is and which run owns it. Only databases carrying both are ever dropped, so a database that
merely looks like ours, or one the user made, is left alone. A run proves it is alive by holding a
session-level advisory lock (its lease) on the admin database; once the run ends or dies, the lock
is released by PostgreSQL itself, and whatever that run left behind may be collected. This works
on a server shared by many machines at once.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from unmocked.errors import DatabaseError

PREFIX = "unmocked_"
COMMENT_TAG = "unmocked:"
# First key of the two-int advisory locks unmocked takes; the second is a run or a fingerprint.
LEASE_LOCK_CLASS = 0x756E6D6B  # "unmk"
TEMPLATE_LOCK_CLASS = 0x756E7470  # "untp"
GC_LOCK_CLASS = 0x756E6763  # "ungc"
# How long a database kept for a failed test survives later runs' clean-up (``unmocked gc`` drops
# it at once): a day to look at it, without letting every failing run add to a server for good.
KEPT_FOR_SECONDS = 24 * 3600

AdminConnection = psycopg.Connection[tuple[object, ...]]


def new_run_id() -> str:
    """A short random id; database names of the run carry it."""
    return secrets.token_hex(5)


def lock_key(text: str) -> int:
    """A signed 32-bit advisory-lock key from ``text`` (hex digits of a run id or digest)."""
    value = int(text[:8], 16)
    return value - (1 << 32) if value >= (1 << 31) else value


@dataclass(frozen=True)
class Owner:
    """What the comment on one of our databases says."""

    kind: str
    """``template``, ``build``, ``rollback``, ``fresh``, or ``kept`` (left for a failed test)."""
    run: str | None = None
    fingerprint: str | None = None
    test: str | None = None
    """The failed test a ``kept`` database belonged to."""
    since: int | None = None
    """When a ``kept`` database was kept, in seconds since the epoch."""

    def comment(self) -> str:
        fields = {key: value for key, value in vars(self).items() if value is not None}
        return COMMENT_TAG + json.dumps(fields, sort_keys=True)

    @classmethod
    def parse(cls, comment: str | None) -> Owner | None:
        if not comment or not comment.startswith(COMMENT_TAG):
            return None
        try:
            fields = json.loads(comment[len(COMMENT_TAG) :])
            return cls(**fields)
        except (ValueError, TypeError):
            return None


def create_database(
    conn: AdminConnection, name: str, owner: Owner, template: str, strategy: str | None
) -> None:
    """``CREATE DATABASE name TEMPLATE template`` and record ``owner`` on it."""
    if not name.startswith(PREFIX):
        raise DatabaseError(f"unmocked creates only databases named {PREFIX}*, not {name!r}")
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(name), sql.Identifier(template)
    )
    if strategy:
        statement += sql.SQL(" STRATEGY {}").format(sql.SQL(strategy))
    try:
        conn.execute(statement)
    except psycopg.errors.ObjectInUse as error:
        raise DatabaseError(
            f"cannot clone {template!r} into {name!r}: {error.diag.message_primary}. "
            "Something holds a connection to the template; close it (or run `unmocked gc`)."
        ) from None
    record_owner(conn, name, owner)


def record_owner(conn: AdminConnection, name: str, owner: Owner) -> None:
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(owner.comment())
        )
    )


def owner_of(conn: AdminConnection, name: str) -> Owner | None:
    """The owner recorded on ``name``, or None when it is not one of ours (or does not exist)."""
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    return Owner.parse(str(row[0]) if row and row[0] else None) if name.startswith(PREFIX) else None


def drop_database(conn: AdminConnection, name: str) -> None:
    """Drop one of our databases, closing connections to it; refuse any other database.

    Safe against another process dropping the same database at the same moment.
    """
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database'), datistemplate FROM pg_database "
        "WHERE datname = %s",
        (name,),
    ).fetchone()
    if not name.startswith(PREFIX) or row is None or Owner.parse(_text(row[0])) is None:
        return
    identifier = sql.Identifier(name)
    roll_back_prepared(conn, name)
    try:
        if row[1]:  # PostgreSQL refuses to drop a database marked as a template
            conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(identifier))
        if conn.info.server_version >= 130000:
            wait_for_sessions_to_end(conn, name, seconds=0.1)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))
        else:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(identifier))
    except (
        psycopg.errors.InvalidCatalogName,
        psycopg.errors.ObjectNotInPrerequisiteState,
        psycopg.errors.InternalError,
    ):
        # Someone else is dropping it right now ("invalid database", "tuple concurrently
        # updated"); it is going away either way.
        if owner_of(conn, name) is not None and _exists(conn, name):
            raise


def roll_back_prepared(conn: AdminConnection, name: str) -> None:
    """Roll back the prepared transactions (``PREPARE TRANSACTION``) left in database ``name``.

    They outlive every session and stop ``DROP DATABASE`` and ``RENAME``; only a session connected
    to their own database may end them.
    """
    rows = conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = %s", (name,)).fetchall()
    if not rows:
        return
    with psycopg.connect(
        conn.info.dsn, dbname=name, password=conn.info.password, autocommit=True
    ) as inside:
        for (gid,) in rows:
            inside.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))


def wait_for_sessions_to_end(
    conn: AdminConnection, name: str, seconds: float | None = None
) -> None:
    """Wait until no session is connected to database ``name`` (at most ``seconds``, if given).

    For sessions already on their way out, which go a moment after their client disconnected:
    DROP DATABASE that finds one sleeps a whole 100 ms before it looks again, and a test handed a
    database must not meet the session that reset it. Ends nobody's session.
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    while deadline is None or time.monotonic() < deadline:
        row = conn.execute("SELECT FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()
        if row is None:
            return
        time.sleep(0.0005)


def _text(value: object) -> str | None:
    return str(value) if value else None


def _exists(conn: AdminConnection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


class Lease:
    """A run's proof of life: a session advisory lock held on its own admin connection."""

    def __init__(self, admin_url: str, run_id: str) -> None:
        self.run_id = run_id
        self.conn: AdminConnection = psycopg.connect(admin_url, autocommit=True)
        self.conn.execute("SELECT pg_advisory_lock(%s, %s)", (LEASE_LOCK_CLASS, lock_key(run_id)))

    def close(self) -> None:
        self.conn.close()


def run_is_alive(conn: AdminConnection, run_id: str) -> bool:
    """True while some session holds ``run_id``'s lease."""
    row = conn.execute(
        "SELECT pg_try_advisory_lock(%s, %s)", (LEASE_LOCK_CLASS, lock_key(run_id))
    ).fetchone()
    if row and row[0]:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LEASE_LOCK_CLASS, lock_key(run_id)))
        return False
    return True


def our_databases(conn: AdminConnection) -> list[tuple[str, Owner]]:
    """Every database on the server that unmocked created, with what its comment records."""
    rows = conn.execute(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname LIKE 'unmocked\\_%' ORDER BY datname"
    ).fetchall()
    found = []
    for name, comment in rows:
        owner = Owner.parse(str(comment) if comment else None)
        if owner is not None:
            found.append((str(name), owner))
    return found


def collect_abandoned(conn: AdminConnection, kept_for: float = KEPT_FOR_SECONDS) -> list[str]:
    """Drop databases left by runs that are no longer alive; return their names.

    Databases kept for failed tests are dropped only once older than ``kept_for`` seconds, so that
    a run's failures can still be looked at after it ended (``unmocked gc`` passes 0).
    One collector at a time per server: collectors that start together (xdist workers) wait for
    each other, and each finds only what the ones before it left.
    """
    lock = (GC_LOCK_CLASS, 0)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", lock)
    try:
        dropped = []
        for name, owner in our_databases(conn):
            if owner.kind == "kept" and time.time() - (owner.since or 0) < kept_for:
                continue
            if owner.kind != "template" and owner.run and not run_is_alive(conn, owner.run):
                drop_database(conn, name)
                dropped.append(name)
        return dropped
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)
