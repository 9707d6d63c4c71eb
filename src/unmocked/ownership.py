"""Which databases unmocked created, and whether the run that created them is still alive.

Every database unmocked creates has a name starting with ``unmocked_`` *and* a comment recording
what it is and which run owns it. Only databases carrying both are ever dropped, so a database that
merely looks like ours, or one the user made, is left alone. A run proves it is alive by holding a
session-level advisory lock (its lease) on the admin database; once the run ends or dies, the lock
is released by PostgreSQL itself, and whatever that run left behind may be collected, except a
database a session is still connected to (a test may end a live run's lease: the run looks dead
until it takes the lease again, :class:`Lease`). This works on a server shared by many machines
at once. Templates belong to no run: they go by their last use
and their number (:func:`old_templates`), and never while a session that clones from them holds
their in-use lock.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import pq, sql

from unmocked.errors import DatabaseError
from unmocked.servers import known_state
from unmocked.session_names import SessionName

PREFIX = "unmocked_"
COMMENT_TAG = "unmocked:"
# First key of the two-int advisory locks unmocked takes; the second is a run or a fingerprint.
LEASE_LOCK_CLASS = 0x756E6D6B  # "unmk"
TEMPLATE_LOCK_CLASS = 0x756E7470  # "untp"
GC_LOCK_CLASS = 0x756E6763  # "ungc"
# Held shared, keyed by fingerprint, by every session that clones from a template (for its whole
# life); a collector drops a template only once it gets the lock exclusively.
TEMPLATE_IN_USE_LOCK_CLASS = 0x756E7475  # "untu"
# How long a database kept for a failed test survives later runs' clean-up (``unmocked gc`` drops
# it at once): a day to look at it, without letting every failing run add to a server for good.
KEPT_FOR_SECONDS = 24 * 3600
# Templates (and their pg_url copies) are collected at a run's start once unused for a week: a
# branch left over a weekend or a short holiday still finds its template, and older ones belong to
# schemas nobody tests any more...
TEMPLATE_UNUSED_FOR_SECONDS = 7 * 24 * 3600
# ... or once 20 more recently used ones are on the server: a template and its pg_url copy for each
# of several projects and branches, at ~10 MB each a couple of hundred MB, where every edit of a
# migration otherwise adds one more for good.
TEMPLATES_KEPT_AT_MOST = 20
# Runs that reuse a template record it at most this often: a comment is a catalog write, and a
# week's limit needs no finer clock.
TEMPLATE_USE_RECORDED_EVERY = 3600

AdminConnection = psycopg.Connection[tuple[object, ...]]


def new_run_id() -> str:
    """A short random id; database names of the run carry it (:func:`run_database_name`)."""
    return secrets.token_hex(5)


# What run_database_name makes: the prefix, a run id of new_run_id's ten hex digits, a kind.
_RUN_DATABASE_NAME = re.compile(re.escape(PREFIX) + r"([0-9a-f]{10})_([a-z]+)_[0-9]+")


def run_database_name(run_id: str, kind: str, number: int) -> str:
    """``unmocked_<run>_<kind>_<n>``: the name of a run's ``number``-th database of ``kind``.

    Every engine's databases are named so (PostgreSQL's ``rollback``, ``fresh``, ``like``;
    MongoDB's ``mongo``): runs and xdist workers, each with its own run id, never share one, and
    :func:`run_in_name` reads back which run made it.
    """
    return f"{PREFIX}{run_id}_{kind}_{number}"


def run_in_name(name: str) -> tuple[str, str] | None:
    """``(run, kind)`` from a name :func:`run_database_name` made; None for any other name.

    On PostgreSQL the comment, not the name, proves a database ours; a server without comments
    (MongoDB) has only the name, so anything that does not match it whole is not ours.
    """
    found = _RUN_DATABASE_NAME.fullmatch(name)
    return (found[1], found[2]) if found else None


def lock_key(text: str) -> int:
    """A signed 32-bit advisory-lock key from ``text`` (hex digits of a run id or digest)."""
    value = int(text[:8], 16)
    return value - (1 << 32) if value >= (1 << 31) else value


def lock_oid(text: str) -> int:
    """:func:`lock_key` as ``pg_locks`` shows it (its ``objid``, an unsigned oid)."""
    return lock_key(text) & 0xFFFFFFFF


@dataclass(frozen=True)
class Owner:
    """What the comment on one of our databases says."""

    kind: str
    """``template``, ``build``, ``rollback``, ``fresh``, ``kept`` (left for a failed test), or
    ``role`` (the login role of ``unmocked_role``, :mod:`unmocked.roles`)."""
    run: str | None = None
    fingerprint: str | None = None
    test: str | None = None
    """The failed test a ``kept`` database belonged to."""
    since: int | None = None
    """When a ``kept`` database was kept, or a ``build`` began, in seconds since the epoch."""
    used: int | None = None
    """When a ``template`` was last used (seconds since the epoch), for its collection: set when
    it is built, recorded again by runs that reuse it at most every
    :data:`TEMPLATE_USE_RECORDED_EVERY`. None on templates of unmocked 0.1.0."""
    pid: int | None = None
    host: str | None = None
    """The process building a ``build`` database, and its machine: named to runs that wait."""

    def comment(self) -> str:
        fields = {key: value for key, value in vars(self).items() if value is not None}
        return COMMENT_TAG + json.dumps(fields, sort_keys=True)

    @classmethod
    def parse(cls, comment: str | None) -> Owner | None:
        if not comment or not comment.startswith(COMMENT_TAG):
            return None
        try:
            fields = json.loads(comment[len(COMMENT_TAG) :])
            # Fields a later unmocked records are left out: the database stays ours.
            known = {field.name for field in dataclasses.fields(cls)}
            return cls(**{key: value for key, value in fields.items() if key in known})
        except (ValueError, TypeError, AttributeError):
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


def record_role_owner(conn: AdminConnection, name: str, owner: Owner) -> None:
    """As :func:`record_owner`, for a role unmocked made (``unmocked_role``'s login)."""
    conn.execute(
        sql.SQL("COMMENT ON ROLE {} IS {}").format(
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
    """A run's proof of life: a session advisory lock, held by its admin session (:attr:`conn`).

    The admin session holds it, not a session of its own: every session is a server process of
    ~12 MB, and a run's other work on that session never lets it go (nothing of unmocked's
    releases every advisory lock there). A test can end that session (``pg_terminate_backend``
    of every other session): the run then looks dead to other runs' collections. :meth:`lost`
    tells it without a round trip, and :meth:`renew` takes the lease on a new session. The lock
    is taken shared, so that the new session holds it before the old one lets go; whether any
    session holds it is what :func:`run_is_alive` reads.
    """

    def __init__(
        self,
        admin_url: str,
        run_id: str,
        major: int = 0,
        group_lock: tuple[int, int] | None = None,
    ) -> None:
        """``group_lock``: a second advisory lock the lease session holds shared, in the same
        round trip (the run's group, which :mod:`unmocked.connection_budget` counts by)."""
        self.run_id = run_id
        self._admin_url = admin_url
        self._major = major
        self._group_lock = group_lock
        self.conn = self._take()

    def _take(self) -> AdminConnection:
        conn: AdminConnection = known_state.connect(self._admin_url, self._major, self.run_id)
        lease = (LEASE_LOCK_CLASS, lock_key(self.run_id))
        if self._group_lock is None:
            conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", lease)
        else:
            conn.execute(
                "SELECT pg_advisory_lock_shared(%s, %s), pg_advisory_lock_shared(%s, %s)",
                (*lease, *self._group_lock),
            )
        return conn

    def lost(self) -> bool:
        """True once the server ended the lease's session; a look at its socket, no round trip."""
        return session_ended(self.conn.pgconn)

    def renew(self) -> None:
        """Take the lease on a new session, then let the old one go (whether it was lost or not:
        a test that ends one session of ours ends the others, some a moment later)."""
        old, self.conn = self.conn, self._take()
        old.close()

    def close(self) -> None:
        self.conn.close()


def session_ended(pgconn: pq.abc.PGconn) -> bool:
    """True when the server ended the idle session of ``pgconn`` (a test's
    ``pg_terminate_backend``, a restart), a psycopg connection's ``pgconn``, sync or async.

    An idle session hears nothing from the server until it sends a query; one it ended has a
    readable socket (the termination notice, then the end of the stream). Only then does this send
    a query, to tell that from a notice.
    """
    if pgconn.status == pq.ConnStatus.BAD:
        return True
    try:
        readable, _, _ = select.select([pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    if not readable:
        return False
    try:
        result = pgconn.exec_(b"SELECT 1")
    except psycopg.OperationalError:
        return True
    return result.status != pq.ExecStatus.TUPLES_OK or pgconn.status == pq.ConnStatus.BAD


def has_sessions(conn: AdminConnection, name: str) -> bool:
    """True while a session is connected to database ``name``.

    A run whose lease was lost (a test ended its session) is alive until it takes it again: its
    databases in use still have sessions, so collections leave those alone.
    """
    row = conn.execute("SELECT FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()
    return row is not None


def run_is_alive(conn: AdminConnection, run_id: str) -> bool:
    """True while some session holds ``run_id``'s lease, ``conn``'s own included.

    Read from ``pg_locks``, not by trying to take the lock: a session's own locks never refuse it
    theirs, so the session that holds a run's lease (its admin session, which collects) would take
    its own run for dead.
    """
    return _lease_holder(conn, run_id) is not None


def _lease_holder(conn: AdminConnection, run_id: str) -> tuple[object, ...] | None:
    """The ``application_name`` of a session holding ``run_id``'s lease, in a row; None if none."""
    return conn.execute(
        "SELECT a.application_name FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted "
        "AND l.classid = %s AND l.objid = %s LIMIT 1",
        (LEASE_LOCK_CLASS, lock_oid(run_id)),
    ).fetchone()


def our_databases(conn: AdminConnection) -> list[tuple[str, Owner]]:
    """Every database on the server that unmocked created, with what its comment records."""
    return _commented(
        conn,
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname LIKE 'unmocked\\_%' ORDER BY datname",
    )


def _commented(conn: AdminConnection, names_and_comments: str) -> list[tuple[str, Owner]]:
    """The names ``names_and_comments`` selects whose comment says unmocked made them."""
    found = []
    for name, comment in conn.execute(names_and_comments).fetchall():
        owner = Owner.parse(str(comment) if comment else None)
        if owner is not None:
            found.append((str(name), owner))
    return found


def collect_abandoned(conn: AdminConnection, kept_for: float = KEPT_FOR_SECONDS) -> list[str]:
    """Drop databases left by runs that are no longer alive, and old templates; return the names.

    Databases kept for failed tests are dropped only once older than ``kept_for`` seconds, so that
    a run's failures can still be looked at after it ended (``unmocked gc`` passes 0). Templates
    go by :func:`old_templates`, unless a live session clones from them.
    One collector at a time per server: collectors that start together (xdist workers) wait for
    each other, and each finds only what the ones before it left.
    """
    return [dropped.name for dropped in collect(conn, kept_for)]


@dataclass(frozen=True)
class Dropped:
    """A database (or login role) a collection dropped, and why, in words (``unmocked gc`` prints
    both)."""

    name: str
    why: str


@dataclass(frozen=True)
class Kept:
    """A database (or login role) of ours a collection left, and why, in words."""

    name: str
    why: str


def collect(
    conn: AdminConnection, kept_for: float = KEPT_FOR_SECONDS, kept: list[Kept] | None = None
) -> list[Dropped]:
    """:func:`collect_abandoned`, saying why each database was dropped; with ``kept``, a list
    it appends what it left and why to (``unmocked gc``'s: the words cost a query per live run
    and per template left, which a run's start does not pay)."""
    lock = (GC_LOCK_CLASS, 0)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", lock)
    try:
        dropped = []
        databases = our_databases(conn)
        now = time.time()
        for name, owner in databases:
            why_kept = _why_kept(conn, name, owner, now, kept_for)
            if why_kept is None:
                try:
                    drop_database(conn, name)
                    dropped.append(Dropped(name, _why_abandoned(owner, now)))
                    continue
                except psycopg.errors.InsufficientPrivilege:
                    # another role's, on a server runs of several roles share
                    why_kept = "another role's database, which this role may not drop"
            if kept is not None and owner.kind != "template":
                kept.append(Kept(name, why_kept(conn) if callable(why_kept) else why_kept))
        old = old_templates(databases, now)
        for name, owner, why in old:
            if drop_template_unless_in_use(conn, name, owner):
                dropped.append(Dropped(name, why))
            elif kept is not None:
                kept.append(Kept(name, _why_template_stays(conn, owner)))
        if kept is not None:
            kept.extend(_templates_kept(databases, {name for name, _, _ in old}, now))
        dropped.extend(_collect_abandoned_roles(conn))
        return dropped
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)


def _why_kept(
    conn: AdminConnection, name: str, owner: Owner, now: float, kept_for: float
) -> str | Callable[[AdminConnection], str] | None:
    """Why a collection leaves ``name`` (a function of the admin connection that says it, where
    the words take a query), or None when it drops it. Templates go by :func:`old_templates`."""
    if owner.kind == "template":
        return "template"
    if owner.kind == "kept" and now - (owner.since or 0) < kept_for:
        return (
            f"kept for the failed test {owner.test or '?'} "
            f"{age_in_words(now - (owner.since or 0))} ago (a run's start drops it after "
            f"{age_in_words(kept_for)}; unmocked gc at once)"
        )
    if not owner.run:
        return "records no run"
    if run_is_alive(conn, owner.run):
        return lambda conn: _run_alive(conn, owner.run or "")
    if has_sessions(conn, name):
        return lambda conn: _sessions_connected(conn, name)
    return None


def _run_alive(conn: AdminConnection, run: str) -> str:
    row = _lease_holder(conn, run)
    said = SessionName.parse(str(row[0] or "")) if row else None
    if said is None:
        return f"run {run} is alive"
    return f"run {run} (pid {said.pid} on {said.host}, {said.user}) is alive"


def _sessions_connected(conn: AdminConnection, name: str) -> str:
    row = conn.execute(
        "SELECT count(*), string_agg(DISTINCT coalesce(nullif(application_name, ''), 'unnamed'), "
        "', ') FROM pg_stat_activity WHERE datname = %s",
        (name,),
    ).fetchone()
    count, names = (row[0], row[1]) if row else (0, "")
    return f"its run is no longer alive, but {count} session(s) are connected to it ({names})"


def _why_template_stays(conn: AdminConnection, owner: Owner) -> str:
    in_use = owner.fingerprint is not None and (
        conn.execute(
            "SELECT FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted "
            "AND classid = %s AND objid = %s",
            (TEMPLATE_IN_USE_LOCK_CLASS, lock_oid(owner.fingerprint)),
        ).fetchone()
        is not None
    )
    if in_use:
        return "template in use: a session clones from it now"
    return "template another role owns, or a clone from it is under way"


def _templates_kept(databases: list[tuple[str, Owner]], old: set[str], now: float) -> list[Kept]:
    """The templates :func:`old_templates` left, and why."""
    kept = []
    for name, owner in databases:
        if owner.kind != "template" or name in old:
            continue
        if owner.used:
            why = (
                f"template among the {TEMPLATES_KEPT_AT_MOST} most recently used, used "
                f"{age_in_words(now - owner.used)} ago"
            )
        else:
            why = "template of unmocked 0.1.0, which records no last use: gc --templates drops it"
        kept.append(Kept(name, why))
    return kept


def _collect_abandoned_roles(conn: AdminConnection) -> list[Dropped]:
    """Drop the login roles of runs no longer alive (see :mod:`unmocked.roles`); one that still
    owns objects in a database kept for a failed test stays until that database is gone."""
    roles = _commented(
        conn,
        "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles "
        "WHERE rolname LIKE 'unmocked\\_%' ORDER BY rolname",
    )
    dropped = []
    for name, owner in roles:
        if owner.kind != "role" or not owner.run or run_is_alive(conn, owner.run):
            continue
        try:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
        except (
            psycopg.errors.DependentObjectsStillExist,
            psycopg.errors.InsufficientPrivilege,
        ):
            continue
        dropped.append(Dropped(name, f"login role of run {owner.run}, no longer alive"))
    return dropped


def old_templates(databases: list[tuple[str, Owner]], now: float) -> list[tuple[str, Owner, str]]:
    """The templates among ``databases`` that a collection drops, each with why.

    Those unused for :data:`TEMPLATE_UNUSED_FOR_SECONDS`, and those past the
    :data:`TEMPLATES_KEPT_AT_MOST` most recently used. Templates of unmocked 0.1.0 carry no last
    use, so nothing tells whether a run uses them right now: only ``unmocked gc --templates``
    drops those.
    """
    used = sorted(
        ((name, owner) for name, owner in databases if owner.kind == "template" and owner.used),
        key=lambda found: found[1].used or 0,
        reverse=True,
    )
    old = []
    for rank, (name, owner) in enumerate(used):
        unused_for = now - (owner.used or 0)
        if unused_for > TEMPLATE_UNUSED_FOR_SECONDS:
            old.append((name, owner, f"template unused for {age_in_words(unused_for)}"))
        elif rank >= TEMPLATES_KEPT_AT_MOST:
            old.append(
                (
                    name,
                    owner,
                    f"template last used {age_in_words(unused_for)} ago; the "
                    f"{TEMPLATES_KEPT_AT_MOST} used more recently are kept",
                )
            )
    return old


def template_in_use_lock(owner: Owner) -> tuple[int, int] | None:
    """The advisory lock that sessions cloning from a template hold shared; None if unknown."""
    if owner.kind != "template" or not owner.fingerprint:
        return None
    return (TEMPLATE_IN_USE_LOCK_CLASS, lock_key(owner.fingerprint))


def drop_template_unless_in_use(conn: AdminConnection, name: str, owner: Owner) -> bool:
    """Drop the template ``name`` unless a live session clones from it; True once dropped.

    Sessions that use a template hold its :func:`template_in_use_lock` shared, so the drop waits
    for none of them and none of them meets a template that went away under a clone. A clone
    that began without the lock (unmocked 0.1.0) makes the drop fail with ObjectInUse, or the
    drop wait for the clone: the template then stays, or goes once copied. A template of another
    role, which this one may not drop, stays too.
    """
    lock = template_in_use_lock(owner)
    if lock is None:  # no fingerprint recorded: no session can hold it
        lock = (TEMPLATE_IN_USE_LOCK_CLASS, lock_key(secrets.token_hex(4)))
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", lock).fetchone()
    if not (row and row[0]):
        return False
    try:
        drop_database(conn, name)
    except (psycopg.errors.ObjectInUse, psycopg.errors.InsufficientPrivilege):
        return False  # another role's template, on a server runs of several roles share
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)
    return not _exists(conn, name)


def age_in_words(seconds: float) -> str:
    """``3 days``, ``5 h``, ``12 min``, ``40 s``: how long ago, as roughly as people say it."""
    if seconds >= 2 * 24 * 3600:
        return f"{int(seconds // (24 * 3600))} days"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60:
        return f"{int(seconds // 60)} min"
    return f"{int(seconds)} s"


def _why_abandoned(owner: Owner, now: float) -> str:
    if owner.kind == "kept":
        kept = age_in_words(now - (owner.since or 0))
        return f"kept for the failed test {owner.test or '?'} {kept} ago"
    return f"{owner.kind} database of run {owner.run}, which is no longer alive"
