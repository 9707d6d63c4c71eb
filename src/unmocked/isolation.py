"""Rollback isolation: every test runs inside one outer transaction that is rolled back after it.

Code under test keeps production's transaction semantics: its ``commit()`` ends a unit of work and
starts the next (a savepoint is released and a new one set), its ``rollback()`` undoes the unit of
work (back to that savepoint), ``with conn.transaction():`` nests as usual and an error inside it
leaves the connection usable. A ``commit()`` also checks DEFERRABLE INITIALLY DEFERRED constraints,
as a real COMMIT would, and fails the same way when they are violated. A ``commit()`` or
``rollback()`` of a unit of work nothing was sent in sends nothing (a SQLAlchemy ``Session``
returning its connection after ``commit()``): it would change nothing.

The same rules hold for psycopg's sync :class:`RollbackConnection` and its asyncio twin
:class:`AsyncRollbackConnection`: psycopg builds both classes' ``commit()`` and ``rollback()`` from
the same generators, which :class:`UnitOfWork` overrides once for both.

What one outer transaction cannot keep: ``now()`` stays at the test's start (within
:data:`EARLY_BEGIN_FOR` before it: the end of a test begins the next one's transaction), sequences
do not roll back, and a raw ``COMMIT``/``ROLLBACK`` statement ends the outer transaction
(unmocked notices and rebuilds the database, so the next test is still isolated). Nor can it hold
a second connection the code under test opens to the same database (from ``pg.info``): that one
commits for real. The end of each test looks for one in the same round trip
(:data:`OUTSIDE_SESSIONS`), and the database is rebuilt as after a raw ``COMMIT``. Tests that
need any of that ask for a fresh database instead (the ``pg_url`` fixture).

psycopg's own prepared statements (``prepare_threshold``) are kept from test to test, as on any
long-lived connection, since preparing each statement anew costs more than the rest of a test's
isolation: statements the test prepared itself (``PREPARE``) are deallocated, and so is everything
after a test that prepared a statement while it had changed the schema (:data:`CATALOG_WRITES`),
or left the server's statements and psycopg's apart (a ``DEALLOCATE``). What that cannot see: a
test that changes a table's columns from inside a function or a ``DO`` block, then runs a
statement psycopg prepared in an earlier test on that table, fails with ``cached plan must not
change result type``, as it would on a long-lived connection in production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import generators, waiting
from psycopg.abc import PQGen
from psycopg.pq import ExecStatus, TransactionStatus

UNIT_OF_WORK = b"unmocked_unit_of_work"
# How often a wait for the server wakes to notice Ctrl-C, as psycopg's own waits do.
_WAIT_INTERVAL = 0.1


# The system catalogs' OIDs, fixed in every PostgreSQL (each catalog's header declares its own):
# a '...'::regclass cast looks the name up on every call, which costs more than the count itself.
_CATALOG_OIDS = {
    b"pg_constraint": b"2606",
    b"pg_class": b"1259",
    b"pg_attribute": b"1249",
    b"pg_type": b"1247",
    b"pg_proc": b"1255",
}


def _writes(*catalogs: bytes) -> bytes:
    """How many rows of ``catalogs`` this session inserted, updated or deleted, an expression."""
    return b" + ".join(
        b"pg_stat_get_xact_tuples_%s(%s)" % (change, _CATALOG_OIDS[catalog])
        for catalog in catalogs
        for change in (b"inserted", b"updated", b"deleted")
    )


# The same check in plain statements, for the connections unmocked drives itself, in one round
# trip: the check, the next unit of work, and pg_constraint's write count. A DO block is compiled
# anew on every call, and listing the initially deferred constraints scans pg_constraint
# (hundreds of rows on a real schema): together they cost more than the rest of a test's
# isolation. So the list is read once per connection and reused while the test has not written to
# pg_constraint, which this process's statistics counters tell without a scan: they only grow
# inside a transaction, so a count equal to the one read at the test's start means no change.
# When there are initially deferred constraints to switch back, a second round trip does it in the
# outer transaction, between the units of work, where a rollback of the next one cannot undo it.
CONSTRAINT_WRITES = _writes(b"pg_constraint")
NEXT_UNIT_OF_WORK = b"RELEASE SAVEPOINT " + UNIT_OF_WORK + b"; SAVEPOINT " + UNIT_OF_WORK
# A real COMMIT checks deferred constraints; releasing a savepoint does not. Switching every
# constraint to IMMEDIATE checks them now, then the initially deferred ones are switched back so
# the next unit of work starts as a real transaction would.
COMMIT_UNIT_OF_WORK = (
    b"SET CONSTRAINTS ALL IMMEDIATE; " + NEXT_UNIT_OF_WORK + b"; SELECT " + CONSTRAINT_WRITES
)
LIST_DEFERRED = (
    b"SELECT string_agg(format('%I.%I', n.nspname, c.conname), ', ') "
    b"FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.condeferred"
)

# Writes to the catalogs a prepared statement's result depends on (relations, their columns,
# types, functions), counted as CONSTRAINT_WRITES is: a statement psycopg prepared while the test
# had changed one of them may not fit the schema the next test starts from.
CATALOG_WRITES = _writes(b"pg_class", b"pg_attribute", b"pg_type", b"pg_proc")
# The beginning of a test, with both counts to compare with later (two columns: casting them to
# text to join them costs more than a column).
BEGIN_TEST = (
    b"BEGIN; SAVEPOINT " + UNIT_OF_WORK + b"; SELECT " + CONSTRAINT_WRITES + b", " + CATALOG_WRITES
)
# The end of a test begins the next one's transaction in its own round trip (see
# UnitOfWork.end_test). ``now()`` is the time that transaction began, so the next test takes it
# only if it starts within this many seconds; later, it begins its own.
EARLY_BEGIN_FOR = 0.05
# That BEGIN takes over the implicit transaction of the statements before it in the round trip
# (a COMMIT to end that one would log a warning): the statistics those looks read, which a
# transaction keeps as first read, are cleared for the test. The SET and RESET statements that
# also become part of it change nothing the rollback had not already undone.
BEGIN_NEXT_TEST = BEGIN_TEST + b", pg_stat_clear_snapshot()"
# The server's prepared statements, to compare with psycopg's own at the end of a test.
PREPARED = b"(SELECT string_agg(name, ' ' ORDER BY name) FROM pg_prepared_statements)"

# What survives a ROLLBACK in a session and could leak into the next test (prepared statements:
# see the module's docstring).
RESET_SESSION = (
    b"SELECT pg_advisory_unlock_all(); DISCARD SEQUENCES; "
    b"SET SESSION AUTHORIZATION DEFAULT; RESET ALL"
)

# Whether a session other than unmocked's own used the database during the test. The end of the
# test reads the database's session count (pg_stat_database), in its one round trip, after the outer
# transaction's rollback: a client session counts itself before its first ReadyForQuery, so an
# unchanged count means none connected since the last look. Only a changed count (another session,
# or one of unmocked's own on connecting) costs more round trips: OTHER_SESSIONS says whether one is
# connected now (it may commit at any time), and once none is, COMMITTED_CHANGES whether rows were
# committed (a session that ended has flushed its statistics before it leaves pg_stat_activity).
# pg_stat_get_activity, not the pg_stat_activity view: after the script's other statements the
# view's joins cost half a millisecond. A backend whose type is hidden from the role counts as a
# client; autovacuum neither counts as a session nor changes those rows.
SESSIONS = "pg_stat_get_db_sessions({oid})"
OTHER_SESSIONS = """SELECT count(*) FROM pg_stat_get_activity(NULL) a WHERE a.datid = {oid}
   AND coalesce(a.backend_type, 'client backend') = 'client backend' AND a.pid NOT IN ({own})"""


def other_sessions(database_oid: object, own_pids: Collection[int]) -> str:
    """:data:`OTHER_SESSIONS` of a database, leaving out the asking session and ``own_pids``
    (unmocked's other connections to it)."""
    own = ", ".join(["pg_backend_pid()", *map(str, own_pids)])
    return OTHER_SESSIONS.format(oid=database_oid, own=own)


# Per table, n_mod_since_analyze counts committed inserts, updates and deletes only (and catalogs
# count DDL); shared catalogs, which other databases write, are left out.
COMMITTED_CHANGES = (
    "SELECT coalesce(sum(pg_stat_get_mod_since_analyze(oid)), 0) FROM pg_class "
    "WHERE relkind IN ('r', 'm') AND NOT relisshared"
)
# pg_stat_database counts sessions since PostgreSQL 14; before, every look takes all three steps.
SESSIONS_SINCE = 140000
# How long a session seen at the end of a test may take to leave before it counts as still there
# (an asyncpg test's, closed a moment before, leaves within milliseconds, later on a busy machine).
OUTSIDE_SESSION_GRACE = 1.0

T = TypeVar("T")


class OuterTransactionLost(Exception):
    """The test ended the outer transaction itself, so its effects may have been committed."""


class OutsideSession(Exception):
    """A session other than unmocked's rollback connections used the database during the test:
    it is still connected, or it committed changes, which no rollback undoes."""

    def __init__(self, still_connected: bool) -> None:
        super().__init__("still connected" if still_connected else "committed changes")
        self.still_connected = still_connected


class UnitOfWork(psycopg.BaseConnection[Any]):
    """The unit-of-work rules both rollback connections share (a mixin; it connects nothing).

    A test is begun and ended with blocking calls, between tests and outside any event loop: the
    statements are tiny, and it lets one asyncio connection serve every test's own event loop.
    """

    @classmethod
    def open(cls: type[T], url: str) -> T:
        """Connect to ``url`` without an event loop; each class says how."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Close the connection without an event loop; each class says how."""
        raise NotImplementedError

    # Set once the test is seen to have ended the outer transaction itself.
    _outer_transaction_lost = False
    # pg_constraint's write count when the test began, and the initially deferred constraints of
    # the schema every test starts from (None until read).
    _constraint_writes: bytes | None = None
    _template_deferred: bytes | None = None
    # The schema catalogs' write count when the test began (CATALOG_WRITES), how many statements
    # psycopg had prepared by then, and whether the next test must start without any.
    _catalog_writes = b""
    _prepared_before = 0
    _deallocate_at_begin = False
    # The database's OID, and its session count and committed changes at the last look (see
    # OUTSIDE_SESSIONS); read once per connection, before its first test.
    _database_oid: bytes | None = None
    # When the end of the last test began the next one's transaction (monotonic seconds).
    _begun_at: float | None = None
    _server_version = 0
    _sessions_seen = b""
    _changes_seen = b""
    # Whether the code under test has sent anything since the unit of work began (every
    # statement of its own goes through ``wait``; unmocked's go around it): a ``commit()`` or
    # ``rollback()`` of an empty unit of work changes nothing, so it sends nothing.
    _unit_of_work_used = True

    def _unit_of_work_is_empty(self) -> bool:
        """True when ``commit()`` or ``rollback()`` would send a round trip that changes nothing:
        no statement since the unit of work began, outside any ``transaction()`` block, pipeline
        or two-phase transaction, and the outer transaction still open (a failed or lost one is
        left to the full path, which says so)."""
        return (
            not self._unit_of_work_used
            and not self._num_transactions
            and not self._tpc
            and self._pipeline is None
            and not self._outer_transaction_lost
            and self.pgconn.transaction_status == TransactionStatus.INTRANS
        )

    def begin_test(self) -> None:
        """Open the outer transaction and the first unit of work, unless the end of the test
        before began them a moment ago (:data:`EARLY_BEGIN_FOR`)."""
        if self._database_oid is None:
            self._look_at_the_database()
        self._outer_transaction_lost = False
        begun_at, self._begun_at = self._begun_at, None
        in_transaction = self.pgconn.transaction_status == TransactionStatus.INTRANS
        if (
            begun_at is not None
            and in_transaction
            and not self._deallocate_at_begin
            and time.monotonic() - begun_at < EARLY_BEGIN_FOR
        ):
            self._unit_of_work_used = False
            return  # end_test noted the counts when it began this transaction
        begin = BEGIN_TEST
        if self._deallocate_at_begin:
            begin = b"DEALLOCATE ALL; " + begin
            self._forget_prepared()
        if in_transaction:
            begin = b"ROLLBACK; " + begin  # begun too long ago, or before the DEALLOCATE
        self._note_begun(self._wait_blocking(self._rows(begin))[-1])
        self._unit_of_work_used = False

    def _note_begun(self, counts: tuple[bytes | None, ...]) -> None:
        """Keep the counts :data:`BEGIN_TEST` read, to compare with those of the test's end."""
        self._constraint_writes, self._catalog_writes = counts[0], counts[1] or b""
        self._prepared_before = self._prepared._prepared_idx

    def end_test(self, own_pids: Collection[int] = ()) -> None:
        """Roll everything back and clear session state; raise if the test escaped the transaction.

        Raises :class:`OuterTransactionLost` when the outer transaction was ended by the test
        (a raw ``COMMIT``, perhaps followed by more statements in a new transaction, perhaps by
        closing the connection), and :class:`OutsideSession` when another session used the
        database meanwhile (``own_pids``: unmocked's other connections to it, which do not count):
        the caller must then treat the database as dirty.

        In the same round trip, once the looks are done, the next test's transaction is begun
        (:data:`BEGIN_TEST`): the connection then waits between tests idle in a transaction that
        holds no snapshot and no transaction ID (only the share lock its look took on the
        ``pg_prepared_statements`` view), and :meth:`begin_test` takes it if it
        comes soon enough (:data:`EARLY_BEGIN_FOR`), else rolls it back and begins its own.
        """
        lost = self._outer_transaction_ended()
        self._begun_at = None
        # Statements psycopg prepared during the test are kept only if the schema was the one
        # the next test starts from (see the module's docstring).
        prepared_now = self._prepared._prepared_idx != self._prepared_before
        look = b"SELECT " + PREPARED
        begin_next = b""
        if self._counts_sessions():
            look += b", " + self._sql(SESSIONS)
            begin_next = b"; " + BEGIN_NEXT_TEST
        rows = []
        try:
            if not lost:
                # Rolling back to the savepoint first proves that the outer transaction is still
                # the one begun for this test; in the same round trip as the end of the test.
                check = b"SELECT " + CATALOG_WRITES + b"; " if prepared_now else b""
                try:
                    rows = self._wait_blocking(
                        self._rows(
                            b"ROLLBACK TO SAVEPOINT "
                            + UNIT_OF_WORK
                            + b"; "
                            + check
                            + b"ROLLBACK; "
                            + RESET_SESSION
                            + b"; "
                            + look
                            + begin_next
                        )
                    )
                except psycopg.errors.InvalidSavepointSpecification:
                    lost = True
            if lost:
                self._wait_blocking(self._script(b"ROLLBACK; DEALLOCATE ALL; " + RESET_SESSION))
        except psycopg.Error:
            if not lost:
                raise
        if lost:
            self._forget_prepared()
            raise OuterTransactionLost()
        counts = rows.pop() if begin_next else None
        server_prepared, *sessions = rows[-1]
        kept = b" ".join(sorted(self._prepared._names.values()))
        self._deallocate_at_begin = (
            (server_prepared or b"") != kept
            or bool(self._prepared._to_flush)
            or (prepared_now and rows[0][0] != self._catalog_writes)
        )
        seen = sessions[0] if sessions else None
        if seen != self._sessions_seen or not self._counts_sessions():
            self._sessions_seen = seen or b""
            if counts is not None:
                # The looks read the statistics, which a transaction would keep as first read.
                self._wait_blocking(self._script(b"ROLLBACK"))
            self._look_for_other_sessions(own_pids)
        elif counts is not None:
            self._note_begun(counts)
            self._begun_at = time.monotonic()

    def _forget_prepared(self) -> None:
        """Forget psycopg's prepared statements, which the server no longer has (or soon not)."""
        self._prepared.clear()
        self._prepared._to_flush.clear()
        self._deallocate_at_begin = False

    def _look_for_other_sessions(self, own_pids: Collection[int]) -> None:
        """Raise :class:`OutsideSession` if another session is connected, or committed changes."""
        # A session the code under test closed a moment ago (or an asyncpg test's, before this
        # one) is still on its way out: what it committed counts once it is gone.
        deadline = time.monotonic() + OUTSIDE_SESSION_GRACE
        assert self._database_oid is not None
        look = other_sessions(self._database_oid.decode(), own_pids).encode()
        while self._wait_blocking(self._script(look)) != b"0":
            if time.monotonic() > deadline:
                raise OutsideSession(still_connected=True)
            time.sleep(0.001)
        if self._wait_blocking(self._script(COMMITTED_CHANGES.encode())) != self._changes_seen:
            raise OutsideSession(still_connected=False)

    def _look_at_the_database(self) -> None:
        """Read the database's OID, session count and committed changes, for the ends of tests."""
        self._server_version = self.pgconn.server_version
        sessions = "pg_stat_get_db_sessions(oid)" if self._counts_sessions() else "0"
        row = self._wait_blocking(
            self._script(
                f"SELECT oid || ' ' || {sessions} || ' ' || ({COMMITTED_CHANGES}) "
                "FROM pg_database WHERE datname = current_database()".encode()
            )
        )
        assert row is not None
        self._database_oid, self._sessions_seen, self._changes_seen = row.split(b" ")

    def _sql(self, template: str, **values: str) -> bytes:
        assert self._database_oid is not None
        return template.format(oid=self._database_oid.decode(), **values).encode()

    def _counts_sessions(self) -> bool:
        # From the info psycopg keeps: the connection may be closed by now (a test closed it).
        return self._server_version >= SESSIONS_SINCE

    def _outer_transaction_ended(self) -> bool:
        if self.pgconn.transaction_status == TransactionStatus.IDLE:
            self._outer_transaction_lost = True
        return self._outer_transaction_lost

    def _commit_gen(self) -> PQGen[None]:
        # Keep psycopg's own checks (inside transaction(), two-phase) before ours.
        if self._num_transactions or self._tpc:
            yield from super()._commit_gen()
        if self._outer_transaction_ended():
            raise psycopg.ProgrammingError(
                "commit() after the test ended unmocked's outer transaction itself (a raw COMMIT "
                "or ROLLBACK statement): unmocked cannot keep this work from other tests. Use "
                "the pg_url fixture for tests that must really commit."
            )
        if self.pgconn.transaction_status == TransactionStatus.INERROR:
            # As COMMIT does in a failed transaction: the work is rolled back, no error raised.
            yield from self._on_unit_of_work(b"ROLLBACK TO SAVEPOINT ")
            return
        writes = yield from self._next_unit_of_work(COMMIT_UNIT_OF_WORK, checks=True)
        # Initially deferred constraints, which the check switched to IMMEDIATE, are switched
        # back between the units of work, so that the new one (still empty) starts as a
        # transaction would; the template's are listed once, the test's own each time.
        unchanged = writes == self._constraint_writes
        if unchanged and self._template_deferred is not None:
            deferred = self._template_deferred
        else:
            deferred = (yield from self._script(LIST_DEFERRED)) or b""
            if unchanged:
                self._template_deferred = deferred
        if deferred:
            yield from self._next_unit_of_work(
                b"RELEASE SAVEPOINT "
                + UNIT_OF_WORK
                + b"; SET CONSTRAINTS "
                + deferred
                + b" DEFERRED; SAVEPOINT "
                + UNIT_OF_WORK
            )
        self._unit_of_work_used = False

    def _next_unit_of_work(self, script: bytes, checks: bool = False) -> PQGen[bytes | None]:
        """End the unit of work and begin the next, with ``script``; when it ``checks`` deferred
        constraints first, a violation fails it as a failed COMMIT would: nothing is left."""
        try:
            return (yield from self._script(script))
        except psycopg.errors.InvalidSavepointSpecification:
            self._outer_transaction_lost = True
            raise
        except psycopg.Error:
            if checks and self.pgconn.transaction_status == TransactionStatus.INERROR:
                yield from self._on_unit_of_work(b"ROLLBACK TO SAVEPOINT ")
            raise

    def _rollback_gen(self) -> PQGen[None]:
        if self._num_transactions or self._tpc:
            yield from super()._rollback_gen()
        lost = self._outer_transaction_ended()
        if not lost:
            try:
                yield from self._on_unit_of_work(b"ROLLBACK TO SAVEPOINT ")
            except psycopg.errors.InvalidSavepointSpecification:
                lost = True
        if lost and self.pgconn.transaction_status != TransactionStatus.IDLE:
            # After the test's raw COMMIT, psycopg began a transaction of its own: end that one.
            yield from self._exec_command(b"ROLLBACK")
        self._prepared.clear()
        self._unit_of_work_used = lost

    def _on_unit_of_work(self, command: bytes) -> PQGen[None]:
        """Run ``command`` on the unit of work's savepoint; note when it is gone with the test's
        outer transaction (a raw COMMIT, then statements in a transaction of psycopg's own)."""
        try:
            yield from self._exec_command(command + UNIT_OF_WORK)
        except psycopg.errors.InvalidSavepointSpecification:
            self._outer_transaction_lost = True
            raise

    def _script(self, script: bytes) -> PQGen[bytes | None]:
        """Send several statements in one round trip (simple query protocol).

        Returns the first value of the last row the statements returned (each statement's first
        row), if any did. An error stops the script where it happened, as PostgreSQL does, and is
        raised.
        """
        rows = yield from self._rows(script)
        return rows[-1][0] if rows else None

    def _rows(self, script: bytes) -> PQGen[list[tuple[bytes | None, ...]]]:
        """As :meth:`_script`; the first row of each statement that returned rows, in order."""
        self.pgconn.send_query(script)
        results = yield from generators.execute(self.pgconn)
        rows = []
        for result in results:
            if result.status == ExecStatus.FATAL_ERROR:
                raise psycopg.errors.error_from_result(result, encoding=self.pgconn._encoding)
            if result.status == ExecStatus.TUPLES_OK and result.ntuples:
                rows.append(tuple(result.get_value(0, i) for i in range(result.nfields)))
        return rows

    def _wait_blocking(self, gen: PQGen[T]) -> T:
        # With no interval, psycopg 3.3 polls the socket without sleeping (timeout 0): the test's
        # process then spins on a core the server needs while it works. psycopg's own waits wake
        # every 0.1 s (to notice Ctrl-C); so do these.
        return waiting.wait(gen, self.pgconn.socket, interval=_WAIT_INTERVAL)


class RollbackConnection(UnitOfWork, psycopg.Connection[Any]):
    """A psycopg connection whose commits and rollbacks stay inside a test's outer transaction."""

    @classmethod
    def open(cls, url: str) -> RollbackConnection:
        return cls.connect(url)

    def disconnect(self) -> None:
        self.close()

    def wait(self, gen: PQGen[T], *args: Any, **kwargs: Any) -> T:
        self._unit_of_work_used = True
        return super().wait(gen, *args, **kwargs)

    def commit(self) -> None:
        if not self._unit_of_work_is_empty():
            super().commit()

    def rollback(self) -> None:
        if not self._unit_of_work_is_empty():
            super().rollback()

    @contextmanager
    def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> Iterator[psycopg.Transaction]:
        """As psycopg's, and the outermost block commits on success, as it would in production."""
        outermost = not self._num_transactions
        with super().transaction(savepoint_name, force_rollback) as transaction:
            yield transaction
        if outermost and not force_rollback:
            self.commit()


class AsyncRollbackConnection(UnitOfWork, psycopg.AsyncConnection[Any]):
    """The asyncio twin of :class:`RollbackConnection`, with the same guarantees.

    One connection serves the tests of a whole process, whatever event loop each test runs in:
    psycopg waits on the socket in whichever loop is running, and the one piece of state bound to
    a loop, the connection's lock, is replaced when a test begins.
    """

    @classmethod
    def open(cls, url: str) -> AsyncRollbackConnection:
        return _run_without_loop(cls.connect(url))

    def disconnect(self) -> None:
        _run_without_loop(self.close())

    def begin_test(self) -> None:
        # An asyncio.Lock binds to the loop of the first task that waits on it; a test's loop is
        # gone when the next test starts.
        self.lock = asyncio.Lock()
        super().begin_test()

    async def wait(self, gen: PQGen[T], *args: Any, **kwargs: Any) -> T:
        self._unit_of_work_used = True
        return await super().wait(gen, *args, **kwargs)

    async def commit(self) -> None:
        if not self._unit_of_work_is_empty():
            await super().commit()

    async def rollback(self) -> None:
        if not self._unit_of_work_is_empty():
            await super().rollback()

    @asynccontextmanager
    async def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> AsyncIterator[psycopg.AsyncTransaction]:
        """As psycopg's, and the outermost block commits on success, as it would in production."""
        outermost = not self._num_transactions
        async with super().transaction(savepoint_name, force_rollback) as transaction:
            yield transaction
        if outermost and not force_rollback:
            await self.commit()


def _run_without_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a private loop in a private thread.

    Unlike ``asyncio.run`` here, this neither unsets this thread's current event loop (which
    pytest-asyncio and anyio manage) nor fails when a loop is already running in this thread.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unmocked") as executor:
        return executor.submit(asyncio.run, coroutine).result()
