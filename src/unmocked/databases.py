"""Fresh databases for ``pg_url``: clone, reset between tests, rename, keep for a failed test, drop.

Cloning a database per test costs tens of milliseconds on a real schema; putting a used one back to
the template's state costs a few, when the database can say exactly what the test changed. So pg_url
databases are cloned from a copy of the template that carries the reset machinery of
:mod:`unmocked.reset_sql` (built once per template, cached like it), and after each test:

1. every session still connected to the database is ended, and waited for: their temporary tables,
   advisory locks, LISTENs and unsent notifications go with them; prepared transactions are rolled
   back;
2. its ``pg_database`` row (owner, ACL, connection limit, comment, name...) is compared with what it
   was when handed out: any change, or a database the test dropped, means a new clone. Settings a
   test gave the database (``ALTER DATABASE ... SET``, ``ALTER ROLE ... IN DATABASE ... SET``) are
   reset, as the template has none;
3. it is renamed, so that the next test gets a URL no code has cached a connection pool for;
4. one function call inside it puts back the written tables' rows, the sequences and the large
   objects, or says why it cannot (the schema changed), and then it is dropped and cloned anew.

Steps 1-3 happen as the test ends, so its URL is dead at once; step 4 runs on the server while
the next test runs on another database (see :class:`FreshDatabases`). Objects of the whole server
(roles, databases, tablespaces, replication slots) cannot be put back inside one database:
:meth:`FreshDatabases.release` returns those that appeared during the test, for the caller to name.

A server that does not allow event triggers (a role that is not superuser, on a server given by
URL) or is older than PostgreSQL 14 (which cannot wait for a session to end) gets a clone per test
and a drop after it, as exact and slower.
"""

from __future__ import annotations

import functools
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import psycopg
from psycopg import pq, sql
from psycopg.pq import ConnStatus, ExecStatus, PollingStatus

from unmocked import ownership, reset_sql
from unmocked.errors import UnmockedError
from unmocked.migrations import digest
from unmocked.ownership import AdminConnection, Owner
from unmocked.templates import Template, clone_strategy, ensure_template
from unmocked.urls import with_database

# Databases a process holds for pg_url at most: one for the test running, the others on their way
# back to the template's state (a session of ours starting in them, the reset running) meanwhile.
# Each is a full copy of the template, so they are cloned only when every one is busy.
POOL_SIZE = 4

# How long ending a test's sessions may take before the database is given up (dropped) instead.
SESSION_END_SECONDS = 5

# What of a database's pg_database row a test may change, besides its name (tracked by OID).
_ROW_STATE = """(datdba, datistemplate, datallowconn, datconnlimit, datacl, dattablespace,
                 shobj_description(oid, 'pg_database'))::text"""

_CLUSTER_OBJECTS = """ARRAY(
    SELECT 'role ' || rolname FROM pg_roles
    UNION ALL SELECT 'database ' || datname FROM pg_database WHERE left(datname, 9) <> 'unmocked_'
    UNION ALL SELECT 'tablespace ' || spcname FROM pg_tablespace
    UNION ALL SELECT 'replication slot ' || slot_name FROM pg_replication_slots)"""
"""Roles, databases, tablespaces and replication slots on the server, as ``kind name``. Databases
named like ours are left out: other runs and xdist workers make them all the time."""

# Steps 1-3 in one round trip (the ``why`` it raises says what stopped it).
_END_SESSIONS_AND_RENAME = """
DECLARE
  deadline timestamptz := clock_timestamp() + make_interval(secs => {seconds});
BEGIN
  PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
   WHERE datid = {oid} AND pid <> pg_backend_pid();
  LOOP
    PERFORM pg_stat_clear_snapshot();  -- else pg_stat_activity stays as this transaction saw it
    EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE datid = {oid});
    IF clock_timestamp() > deadline THEN
      RAISE EXCEPTION 'unmocked: sessions stay';
    END IF;
    PERFORM pg_sleep(0.0005);
  END LOOP;
  IF NOT EXISTS (SELECT FROM pg_database
                  WHERE oid = {oid} AND datname = {name} AND {row_state} = {state}) THEN
    RAISE EXCEPTION 'unmocked: changed';
  ELSIF EXISTS (SELECT FROM pg_db_role_setting WHERE setdatabase = {oid})
     OR EXISTS (SELECT FROM pg_prepared_xacts WHERE database = {name}) THEN
    RAISE EXCEPTION 'unmocked: settings';
  END IF;
  EXECUTE format('ALTER DATABASE %I RENAME TO %I', {name}, {new_name});
END
"""


@dataclass
class FreshDatabase:
    """One pg_url database, tracked by OID since a test may rename it."""

    name: str
    oid: int
    row_state: str
    """Its pg_database row (all but the name) when it was handed out."""
    cloned: bool
    """True when it was cloned for the test it is handed to, False when it was reset."""


class ResetMachinery:
    """The template plus :mod:`unmocked.reset_sql`'s machinery: what pg_url databases come from.

    A migration source in form, so that :func:`unmocked.templates.ensure_template` builds it once
    per template under the same lock and cache rules, cloned from the template itself.
    """

    def __init__(self, template: Template) -> None:
        self.template = template

    def describe(self) -> str:
        return f"the reset machinery over template {self.template.fingerprint[:6]}"

    def fingerprint(self) -> str:
        return digest(b"reset", reset_sql.RESET_FORMAT, self.template.fingerprint.encode())

    def apply(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(reset_sql.INSTALL.encode())


def why_reset_is_unavailable(conn: AdminConnection) -> str | None:
    """None when the server behind ``conn`` allows resetting databases, else why not."""
    if conn.info.server_version < 140000:
        return "PostgreSQL 13 and older cannot wait for a session to end"
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not row or not row[0]:
        return f"the role {conn.info.user!r} is not a superuser, so it cannot use event triggers"
    return None


class _Resetting:
    """Step 4 under way, advanced through libpq's non-blocking calls without waiting where it can.

    Its stages: ``connecting`` while a session of our own starts in the database, ``resetting``
    while the reset runs. So the server does both while the next test runs on another database.
    """

    def __init__(self, database: FreshDatabase, url: str) -> None:
        self.database = database
        self.inside = pq.PGconn.connect_start(url.encode())
        self.stage = "connecting"
        self.polling = PollingStatus.WRITING  # as libpq says to act right after connect_start
        self.outcome: bool | None = None
        """None while under way; then True when the database is back in the template's state."""

    def advance(self, wait: bool) -> bool:
        """Take the reset as far as it goes (to its end with ``wait``); True once it ended."""
        inside = self.inside
        while self.stage == "connecting":
            if self.polling == PollingStatus.FAILED or inside.status == ConnStatus.BAD:
                return self._end(False)
            reading = self.polling == PollingStatus.READING
            ready = select.select(
                [inside.socket] if reading else [],
                [] if reading else [inside.socket],
                [],
                None if wait else 0,
            )
            if not any(ready):
                return False
            self.polling = PollingStatus(inside.connect_poll())
            if self.polling == PollingStatus.OK:
                inside.send_query(reset_sql.RESET.encode())
                self.stage = "resetting"
        reset = _result(inside, wait)
        if reset is None:
            return False
        return self._end(reset.status == ExecStatus.TUPLES_OK and reset.get_value(0, 0) is None)

    def _end(self, outcome: bool) -> bool:
        self.inside.finish()  # its session ends while the next test starts; acquire() waits
        self.outcome = outcome
        return True


def _result(pgconn: pq.abc.PGconn, wait: bool) -> pq.abc.PGresult | None:
    """The result of the one query sent on ``pgconn``; None while it runs and not ``wait``."""
    while pgconn.flush():
        select.select([], [pgconn.socket], [])
    pgconn.consume_input()
    while pgconn.is_busy():
        if not wait:
            return None
        select.select([pgconn.socket], [], [])
        pgconn.consume_input()
    result = pgconn.get_result()
    while pgconn.get_result() is not None:
        pass
    assert result is not None
    return result


class FreshDatabases:
    """This process's pg_url databases: cloned when none is ready, reset after each test.

    A reset is advanced without waiting (see :class:`_Resetting`), so the server puts one database
    back while the next test runs on another: another database is cloned when a test starts while
    every one is being reset (up to :data:`POOL_SIZE`), and from then on they take turns. (Not a
    thread: a thread of the test process waits for the interpreter lock after each round trip,
    which costs more than it saves.)
    """

    def __init__(
        self,
        admin: AdminConnection,
        admin_url: str,
        run_id: str,
        template: Callable[[], Template],
        new_name: Callable[[], str],
    ) -> None:
        self.admin = admin
        self.admin_url = admin_url
        self.run_id = run_id
        self._template = template
        self._new_name = new_name
        self._ready: list[FreshDatabase] = []
        self._resetting: list[_Resetting] = []
        self._databases = 0
        """Databases this process holds: in use, being reset or ready."""
        self._cluster_objects: frozenset[str] | None = None
        self._source: str | None = None
        self.reset_unavailable = why_reset_is_unavailable(admin)
        """Why databases are dropped and cloned instead of reset, or None when they are reset."""

    def acquire(self) -> FreshDatabase:
        """A database in the template's state that no session is connected to.

        Also notes the server's roles, databases... for :meth:`release` to name the new ones.
        """
        self._advance_resets(wait=False)
        while not self._ready and self._resetting and self._databases >= POOL_SIZE:
            self._advance_resets(wait=True, count=1)
        if self._cluster_objects is None:  # else as the last test of this process left them
            row = self.admin.execute(f"SELECT {_CLUSTER_OBJECTS}").fetchone()
            self._cluster_objects = _texts(row[0] if row else [])
        if self._ready:
            database = self._ready.pop()
            # The session that reset it may still be on its way out; the test must not meet it.
            while self.admin.execute(
                "SELECT FROM pg_stat_activity WHERE datid = %s", (database.oid,)
            ).fetchone():
                time.sleep(0.0005)
            return database
        name = self._new_name()
        ownership.create_database(
            self.admin,
            name,
            Owner("fresh", run=self.run_id),
            self._clone_source(),
            self._clone_strategy,
        )
        row = self.admin.execute(
            f"SELECT oid, {_ROW_STATE} FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if row is None:
            raise UnmockedError(f"the database {name!r} vanished right after it was cloned")
        self._databases += 1
        database = FreshDatabase(name, int(str(row[0])), str(row[1]), cloned=True)
        if self._databases == 1 and self.reset_unavailable is None:
            self._learn_whether_the_schema_allows_reset(database)
        return database

    def release(self, database: FreshDatabase) -> set[str]:
        """Start putting ``database`` back to the template's state for a later test, or drop it.

        Returns the roles, databases... that appeared on the server since :meth:`acquire`.
        """
        self._advance_resets(wait=False)
        appeared = self._cluster_objects_appeared()
        if self.reset_unavailable is None and self._start_reset(database):
            return appeared
        self._databases -= 1
        _drop(self.admin, database.oid, self.run_id)
        return appeared

    def keep(self, database: FreshDatabase, test_name: str) -> tuple[str, set[str]]:
        """Leave ``database`` as its test left it, for ``unmocked psql``.

        Its comment says it is kept, so this run's end leaves it and later runs collect it only
        after :data:`unmocked.ownership.KEPT_FOR_SECONDS` (``unmocked gc`` at once). Returns its
        name, and what :meth:`release` would.
        """
        self._databases -= 1
        appeared = self._cluster_objects_appeared()
        row = self.admin.execute(
            "SELECT datname FROM pg_database WHERE oid = %s", (database.oid,)
        ).fetchone()
        if row is None:
            return database.name, appeared  # the test dropped it
        owner = Owner("kept", run=self.run_id, test=test_name, since=int(time.time()))
        ownership.record_owner(self.admin, str(row[0]), owner)
        return str(row[0]), appeared

    def _cluster_objects_appeared(self) -> set[str]:
        """Roles, databases... new since the last look (at this test's start, or the last end)."""
        row = self.admin.execute(f"SELECT {_CLUSTER_OBJECTS}").fetchone()
        before, self._cluster_objects = self._cluster_objects, _texts(row[0] if row else [])
        return set(self._cluster_objects - (before or frozenset()))

    def close(self) -> None:
        """Finish the resets under way and drop every database."""
        self._advance_resets(wait=True)
        while self._ready:
            _drop(self.admin, self._ready.pop().oid, self.run_id)

    def _clone_source(self) -> str:
        """The template pg_url databases are cloned from; falls back to the plain template."""
        if self._source is None:
            template = self._template()
            self._source = template.name
            if self.reset_unavailable is None:
                try:
                    self._source = ensure_template(
                        self.admin,
                        self.admin_url,
                        ResetMachinery(template),
                        self.admin.info.server_version // 10000,
                        self.run_id,
                        base=template.name,
                    ).name
                except (UnmockedError, psycopg.Error) as error:
                    self.reset_unavailable = f"preparing the template for reset failed: {error}"
        return self._source

    def _learn_whether_the_schema_allows_reset(self, database: FreshDatabase) -> None:
        """Read, once, whether the template's schema lets reset work at all (see reset_sql).

        When it does not, every test gets a new clone, and the run's summary says why.
        """
        with psycopg.connect(with_database(self.admin_url, database.name)) as inside:
            row = inside.execute(f"SELECT cannot_reset FROM {reset_sql.SCHEMA}.facts").fetchone()
        if row and row[0]:
            self.reset_unavailable = str(row[0])
        while self.admin.execute(
            "SELECT FROM pg_stat_activity WHERE datid = %s", (database.oid,)
        ).fetchone():
            time.sleep(0.0005)

    @functools.cached_property
    def _clone_strategy(self) -> str | None:
        return clone_strategy(self.admin)

    def _start_reset(self, database: FreshDatabase) -> bool:
        """Steps 1-3 now, so that the test's URL is dead once it ended; step 4 started.

        False when the database must be dropped instead.
        """
        new_name = self._new_name()
        for attempt in range(2):
            try:
                self.admin.execute(_end_sessions_and_rename(self.admin, database, new_name))
                break
            except psycopg.Error as error:
                if error.diag.message_primary != "unmocked: settings" or attempt:
                    return False  # dropped, renamed or altered by the test: clone anew
                ownership.roll_back_prepared(self.admin, database.name)
                _reset_settings(self.admin, database)
        database.name = new_name
        self._resetting.append(_Resetting(database, with_database(self.admin_url, new_name)))
        self._advance_resets(wait=False)
        return True

    def _advance_resets(self, wait: bool, count: int | None = None) -> None:
        """Advance the resets under way, oldest first (``count`` of them to their end with
        ``wait``); a database whose reset ended is ready for a next test, or dropped."""
        for resetting in list(self._resetting[:count]):
            if not resetting.advance(wait):
                continue
            self._resetting.remove(resetting)
            if resetting.outcome:
                resetting.database.cloned = False
                self._ready.append(resetting.database)
            else:
                self._databases -= 1
                _drop(self.admin, resetting.database.oid, self.run_id)


def _end_sessions_and_rename(
    admin: AdminConnection, database: FreshDatabase, new_name: str
) -> sql.Composed:
    body = sql.SQL(_END_SESSIONS_AND_RENAME).format(
        seconds=SESSION_END_SECONDS,
        oid=database.oid,
        name=database.name,
        new_name=new_name,
        row_state=sql.SQL(_ROW_STATE),
        state=database.row_state,
    )
    return sql.SQL("DO {}").format(sql.Literal(body.as_string(admin)))


def _reset_settings(admin: AdminConnection, database: FreshDatabase) -> None:
    """Undo ``ALTER DATABASE ... SET`` and ``ALTER ROLE ... IN DATABASE ... SET``."""
    roles = admin.execute(
        "SELECT setrole::regrole::text FROM pg_db_role_setting "
        "WHERE setdatabase = %s AND setrole <> 0",
        (database.oid,),
    ).fetchall()
    name = sql.Identifier(database.name)
    admin.execute(sql.SQL("ALTER DATABASE {} RESET ALL").format(name))
    for (role,) in roles:
        admin.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(sql.SQL(str(role)), name)
        )


def _drop(admin: AdminConnection, oid: int, run_id: str) -> None:
    """Drop a database of ours, by OID: also when the test renamed it or rewrote its comment.

    (A test that renamed it to a name without our prefix keeps it: unmocked drops only databases
    whose name says they are its own.)
    """
    row = admin.execute("SELECT datname FROM pg_database WHERE oid = %s", (oid,)).fetchone()
    if row is None:
        return
    name = str(row[0])
    if name.startswith(ownership.PREFIX) and ownership.owner_of(admin, name) is None:
        ownership.record_owner(admin, name, Owner("fresh", run=run_id))
    ownership.drop_database(admin, name)


def _texts(array: object) -> frozenset[str]:
    """The items of a text array that psycopg returned as a list."""
    return frozenset(str(item) for item in cast(list[object], array))
