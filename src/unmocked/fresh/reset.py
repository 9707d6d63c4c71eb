"""Putting a used ``pg_url`` database back to its template's state in place: the SQL and its driver.

:data:`INSTALL` (the text of ``reset.sql``) runs once, in a copy of the template that pg_url
databases are then cloned from (:class:`ResetMachinery`; never in the template itself, so rollback
tests pay nothing for it). It adds a schema of ours, ``unmocked_reset``, holding:

- a table of the relations a statement wrote to, filled by a statement-level trigger on every
  ordinary and partitioned table. Statement triggers fire for COPY FROM, for the cascading deletes
  of foreign keys and for TRUNCATE (also of each table a CASCADE reaches); the triggers are
  ``ENABLE ALWAYS`` so ``session_replication_role = replica`` cannot silence them;
- what tells a schema change, which makes a database be dropped and cloned again, never repaired.
  On a superuser's server, an event trigger (``ddl_command_end`` and ``sql_drop``, also
  ``ENABLE ALWAYS``) writes to a table when a schema object outside temporary schemas is created,
  altered, granted or dropped (:attr:`ResetMode.watch` ``events``). A role that is no superuser (a
  managed service's: CREATEDB, owner of its databases) may not make event triggers: the reset then
  reads the catalogs themselves (``catalogs``). Every row a statement writes carries its
  transaction's id (``xmin``), so a catalog row newer than the last reset, or a catalog with more or
  fewer rows than then, is a change; a relation's row a TRUNCATE, CLUSTER or REINDEX rewrote for
  its new storage alone is told apart by comparing what else it says with a snapshot;
- a copy of every row the template holds, and each sequence's value in the template.

Marks are plain (logged) tables: a crash of the server keeps them, where an unlogged table would
come back empty and let a written table pass for untouched. A mark is written only when the table
has none visible yet, and no unique index backs it, so two of the test's connections writing one
table never wait for each other on our account.

:data:`RESET` is one function call, one transaction: it says why the database cannot be reset (the
schema changed, a trigger of ours was disabled...), or deletes every row of the tables written to
(plus inheritance children and partitions, and tables whose foreign keys have ON DELETE / ON UPDATE
actions on them, transitively), puts the template's rows back, sets every sequence back and unlinks
every large object, with ``session_replication_role = replica`` so that neither foreign keys nor
the user's triggers act on the way. A role that may not set it (:attr:`ResetMode.replica` off)
puts rows back by primary key instead: the rows the test added are deleted (from the tables that
reference others first), the template's rows updated back where they changed and inserted where
they went (referenced tables first), so that a row of the template that an unwritten table's rows
reference is never deleted; what is deferrable is deferred, and the user's triggers are switched
off by name for the while. A schema whose foreign keys form a cycle, with a referenced table of
rows but no primary key, a rule or FORCE ROW LEVEL SECURITY, is cloned per test instead.
:class:`ResetInside` runs it through libpq's non-blocking calls, so the server resets one database
while the next test runs on another.
"""

from __future__ import annotations

import queue
import select
import threading
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import pq
from psycopg.pq import ConnStatus, ExecStatus, PollingStatus

from unmocked.migrations import digest
from unmocked.ownership import AdminConnection
from unmocked.templates import Template

SCHEMA = "unmocked_reset"

INSTALL = resources.files(__package__).joinpath("reset.sql").read_text(encoding="utf-8")
"""Prepare a database for reset: run once, in the template copy pg_url databases come from."""

UNINSTALL = f"""
DROP EVENT TRIGGER IF EXISTS unmocked_ddl, unmocked_index, unmocked_drop;
DROP SCHEMA {SCHEMA} CASCADE;
"""
"""Remove :data:`INSTALL`'s machinery (the triggers on tables go with the functions they call)."""

CHANGES = f"SELECT EXISTS (SELECT FROM {SCHEMA}.written) OR {SCHEMA}.schema_change() IS NOT NULL"
"""Whether a committed write or a schema change reached the database since its clone (or reset)."""

RESET = b"SELECT unmocked_reset.reset()"
"""Put the database back to the template's state; NULL, or why it cannot (so: clone anew)."""


@dataclass(frozen=True)
class ResetMode:
    """How the machinery tells a schema change and keeps foreign keys and triggers quiet: what
    the role installing it may do (:func:`mode_of`)."""

    watch: str
    """``events``: event triggers note schema changes (a superuser's); ``catalogs``: the reset
    reads the catalogs for them (any owner's)."""
    replica: bool
    """Whether the role may set ``session_replication_role`` (a superuser, or granted it)."""

    def settings(self) -> str:
        """The statement that hands the mode to :data:`INSTALL`."""
        replica = "on" if self.replica else "off"
        return (
            f"SELECT set_config('{SCHEMA}.watch', '{self.watch}', false), "
            f"set_config('{SCHEMA}.replica', '{replica}', false)"
        )


def mode_of(conn: AdminConnection) -> ResetMode:
    """What the role of ``conn`` may do, so what machinery it installs.

    PostgreSQL 15 lets a superuser grant ``SET`` on ``session_replication_role`` to a role
    (``GRANT SET ON PARAMETER``); earlier, only superusers may set it.
    """
    granted = (
        "has_parameter_privilege('session_replication_role', 'SET')"
        if conn.info.server_version >= 150000
        else "false"
    )
    row = conn.execute(
        f"SELECT rolsuper, rolsuper OR {granted} FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    superuser, replica = (bool(row[0]), bool(row[1])) if row else (False, False)
    return ResetMode("events" if superuser else "catalogs", replica)


class ResetMachinery:
    """The template plus :data:`INSTALL`'s machinery: what pg_url databases are cloned from.

    A migration source in form, so that :func:`unmocked.templates.ensure_template` builds it once
    per template under the same lock and cache rules, cloned from the template itself. Its
    fingerprint covers the text of ``reset.sql`` and the mode: a changed file is a new copy, never
    a stale one, and roles of other rights on one server (a superuser and a managed service's
    owner) each get the copy they can reset.
    """

    def __init__(self, template: Template, mode: ResetMode) -> None:
        self.template = template
        self.mode = mode

    def describe(self) -> str:
        return f"the reset machinery over template {self.template.fingerprint[:6]}"

    def fingerprint(self) -> str:
        return digest(
            b"reset",
            INSTALL.encode(),
            self.template.fingerprint.encode(),
            f"{self.mode.watch} {self.mode.replica}".encode(),
        )

    def apply(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(self.mode.settings())
            conn.execute(INSTALL.encode())


def install_again(url: str, mode: ResetMode) -> None:
    """The machinery anew, over what a copy of a database that carried it holds now: reset then
    puts its clones back to this state, not to the template's."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(mode.settings())
        conn.execute(UNINSTALL.encode())
        conn.execute(INSTALL.encode())


def why_reset_is_unavailable(conn: AdminConnection) -> str | None:
    """None when the server behind ``conn`` allows resetting databases, else why not."""
    if conn.info.server_version < 140000:
        return "PostgreSQL 13 and older cannot wait for a session to end"
    return None


def why_schema_cannot_be_reset(url: str) -> str | None:
    """Read, in a database cloned from the machinery, whether its schema lets reset work at all.

    A template with large objects, or a trigger or rule that would act during the reset, cannot
    be put back in place: every test then gets a new clone.
    """
    with psycopg.connect(url) as inside:
        row = inside.execute(f"SELECT cannot_reset FROM {SCHEMA}.facts").fetchone()
    return str(row[0]) if row and row[0] else None


class ResetInside:
    """:data:`RESET` under way in one database, advanced without waiting where it can.

    A session of our own connects to the database on :data:`_CONNECTOR`'s thread, which waits for
    the server without the interpreter lock: the test process goes on meanwhile, and the handshake
    is never left half-done (a backend waiting in its authentication keeps every DROP DATABASE on
    the server waiting, up to the server's authentication_timeout, now that servers ask for a
    password). The thread sends the reset as soon as it is connected, and the reset runs on the
    server while the next test runs on another database. (Only the connect: a thread that waited
    for the reset's result too would wait for the interpreter lock after each round trip of the
    test process, which costs more than it saves.)
    """

    def __init__(self, url: str) -> None:
        self._url = url.encode()
        self._inside: pq.abc.PGconn | None = None
        self._sent = False
        self._connected = threading.Event()
        _CONNECTOR.connect(self)

    def connect(self) -> None:
        """Open the session and send the reset; on the connector's thread."""
        try:
            inside = self._inside = pq.PGconn.connect_start(self._url)
            polled = (
                PollingStatus.FAILED if inside.status == ConnStatus.BAD else PollingStatus.WRITING
            )
            while polled in (PollingStatus.READING, PollingStatus.WRITING):
                if polled == PollingStatus.READING:
                    select.select([inside.socket], [], [])
                else:
                    select.select([], [inside.socket], [])
                polled = PollingStatus(inside.connect_poll())
            if inside.status != ConnStatus.OK:
                return
            inside.nonblocking = 1
            inside.send_query(RESET)
            self._sent = True
        except psycopg.OperationalError:
            return  # the session ended meanwhile: the database is dropped instead
        finally:
            self._connected.set()

    def advance(self, wait: bool) -> bool | None:
        """Take the reset as far as it goes (to its end with ``wait``).

        None while it is under way; then True when the database is back in the template's state,
        False when it must be dropped instead.
        """
        if not self._connected.is_set() and not wait:
            return None
        self._connected.wait()
        inside = self._inside
        if inside is None:  # no memory for a connection
            return False
        if not self._sent:
            return self._end(inside, False)
        result = _result(inside, wait)
        if result is None:
            return None
        return self._end(
            inside, result.status == ExecStatus.TUPLES_OK and result.get_value(0, 0) is None
        )

    def _end(self, inside: pq.abc.PGconn, outcome: bool) -> bool:
        inside.finish()  # its session ends while the next test starts; acquire() waits
        return outcome


class _Connector:
    """The one thread of the process that opens resets' sessions, in the order asked, started on
    first use (and again in a child process, where a fork left it behind)."""

    def __init__(self) -> None:
        self._asked: queue.SimpleQueue[ResetInside] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def connect(self, reset: ResetInside) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._serve, name="unmocked reset sessions", daemon=True
            )
            self._thread.start()
        self._asked.put(reset)

    def _serve(self) -> None:
        while True:
            self._asked.get().connect()


_CONNECTOR = _Connector()


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
