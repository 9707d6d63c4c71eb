"""SQLAlchemy on top of rollback isolation: Engines and Sessions, sync and asyncio.

Sync, and asyncio with psycopg: the engine hands out unmocked's rollback connection itself, so a
``Session``'s ``commit()`` and ``rollback()`` (and the pool's rollback when a connection is
returned) reach the same unit-of-work savepoints as plain psycopg code: deferred constraints are
checked on commit, nothing survives the test, and a test that uses both ``pg`` and ``sa_session``
(or ``apg`` and ``sa_async_session``) sees one transaction, not two.

asyncio with asyncpg: unmocked cannot drive asyncpg's connection, so it uses SQLAlchemy's own
recipe instead: the connection opens an outer transaction, the session joins it with a savepoint
per unit of work (``join_transaction_mode="create_savepoint"``), and the outer transaction is
rolled back after the test. A hook makes the session's ``commit()`` check deferred constraints, as
the psycopg path does. Those savepoints and checks stand for the unit of work's ``BEGIN`` and
``COMMIT``: the ``queries`` fixture never counts them (a savepoint the test's code asks for
inside, with ``begin_nested()``, it does).
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
import weakref
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar, cast

from unmocked.checks import recording
from unmocked.isolation import (
    COMMITTED_CHANGES,
    CONSTRAINT_WRITES,
    LIST_DEFERRED,
    OUTSIDE_SESSION_GRACE,
    SESSIONS,
    SESSIONS_SINCE,
    UNIT_OF_WORK,
    AsyncRollbackConnection,
    OuterTransactionLost,
    OutsideSession,
    RollbackConnection,
    other_sessions,
)
from unmocked.urls import with_driver

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.engine.interfaces import AdaptedConnection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

S = TypeVar("S", bound="AsyncSession")

_engines: weakref.WeakKeyDictionary[RollbackConnection, Engine] = weakref.WeakKeyDictionary()
_async_engines: weakref.WeakKeyDictionary[AsyncRollbackConnection, AsyncEngine] = (
    weakref.WeakKeyDictionary()
)
_asyncpg_engines: dict[str, AsyncEngine] = {}


def rollback_engine(conn: RollbackConnection) -> Engine:
    """An Engine whose only connection is ``conn`` (made once per connection, then reused)."""
    engine = _engines.get(conn)
    if engine is None:
        import sqlalchemy
        from sqlalchemy.pool import StaticPool

        engine = sqlalchemy.create_engine(
            "postgresql+psycopg://", creator=lambda: conn, poolclass=StaticPool
        )
        _engines[conn] = engine
    return engine


def async_rollback_engine(conn: AsyncRollbackConnection) -> AsyncEngine:
    """An AsyncEngine whose only connection is ``conn`` (made once per connection, then reused).

    Reused because a new engine costs a dialect set-up and an empty statement cache: about 10 ms
    a test. The pooled connection outlives each test's event loop, so its asyncio lock is
    replaced at every checkout, as :class:`AsyncRollbackConnection` does with its own.
    """
    engine = _async_engines.get(conn)
    if engine is None:
        from sqlalchemy import event
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import StaticPool

        async def creator() -> AsyncRollbackConnection:
            return conn

        engine = create_async_engine(
            "postgresql+psycopg://", async_creator=creator, poolclass=StaticPool
        )
        event.listen(engine.sync_engine, "checkout", _unbind_from_event_loop)
        _async_engines[conn] = engine
    return engine


def _unbind_from_event_loop(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    dbapi_connection._execute_mutex = asyncio.Lock()


@asynccontextmanager
async def psycopg_sessions(conn: AsyncRollbackConnection) -> AsyncIterator[AsyncSessions]:
    """Async sessions over ``conn``, the test's rollback connection; closed at the end.

    Their commits are ``conn``'s, so they share its transaction with code using ``conn``; ending
    the test's transaction is ``conn``'s caller's business.
    """
    sessions = AsyncSessions(async_rollback_engine(conn), joined=False)
    try:
        yield sessions
    finally:
        await sessions.close()


@asynccontextmanager
async def asyncpg_sessions(
    url: str,
    kept: KeptAsyncpgConnection | None = None,
    own_pids: Callable[[], Collection[int]] = tuple,
) -> AsyncIterator[AsyncSessions]:
    """Async sessions over an asyncpg connection to ``url``, inside an outer transaction.

    Each session joins that transaction with a savepoint per unit of work; at the end the
    sessions are closed and the outer transaction rolled back. The connection is ``kept``'s
    (made or reused; see :class:`KeptAsyncpgConnection`), else one of its own, closed at the end.
    Raises :class:`OuterTransactionLost` at the end when the code inside ended the outer
    transaction itself (a raw ``COMMIT``), and :class:`OutsideSession` when another session used
    the database meanwhile (``own_pids``: unmocked's other connections to it, which do not count):
    the caller must then treat the database as dirty.
    """
    own = kept or KeptAsyncpgConnection()
    bind = await own.connection(url)
    await bind.begin()
    sessions = AsyncSessions(bind, joined=True)
    own.begin_test()
    try:
        yield sessions
        await own.end_test(sessions, own_pids)
    except BaseException:
        own.terminate()
        raise
    finally:
        own.in_test = False
        if kept is None:
            await own.close()


# What a rolled-back transaction leaves of a session: its advisory locks, the statements it
# PREPAREd and the sequence values it read (currval, lastval). asyncpg's own prepared
# statements stay: they are the statement cache the connection is kept for. SET, SET ROLE,
# temporary tables, LISTEN and cursors are undone by the rollback itself. Plain statements in one
# round trip (a DO block is compiled anew on every call, and costs twice as much): asyncpg's
# execute() returns only the last statement's status, so the last statement returns a row for
# each statement the test PREPAREd, and one more when pg_constraint's write count (see
# _check_deferred_constraints) is not 0: "SELECT 0" says there is nothing more to do, and that the
# next test starts with no writes counted; anything else has AFTER_RESET_KEPT_SESSION read which.
RESET_KEPT_SESSION = (
    "SELECT pg_advisory_unlock_all(); DISCARD SEQUENCES; "
    "SELECT FROM pg_prepared_statements WHERE from_sql "
    f"UNION ALL SELECT WHERE {CONSTRAINT_WRITES.decode()} <> 0"
)
NOTHING_LEFT = "SELECT 0"
AFTER_RESET_KEPT_SESSION = (
    "SELECT (SELECT string_agg(format('DEALLOCATE %I', name), '; ') FROM pg_prepared_statements "
    f"WHERE from_sql), {CONSTRAINT_WRITES.decode()} = 0"
)
# Whether another session used the database during the test, as the psycopg connections' end
# tells it (see isolation.SESSIONS): one more row in RESET_KEPT_SESSION when the database's session
# count moved since the last look, read again after it with the rest. What the look compares
# with is read when the connection opens.
SESSIONS_MOVED = f" UNION ALL SELECT WHERE {SESSIONS} <> {{seen}}"
LOOK_AT_THE_DATABASE = (
    "SELECT oid, {sessions}, (" + COMMITTED_CHANGES + ") FROM pg_database "
    "WHERE datname = current_database()"
)

# A joined session's commit checks deferred constraints as COMMIT would, in plain statements (see
# _check_deferred_constraints): every constraint IMMEDIATE, then the initially deferred ones back
# to DEFERRED. Their list is the template's, read once per connection, unless the test wrote to
# pg_constraint (its write count, as isolation.CONSTRAINT_WRITES, is not 0): then it is read anew.
CHECK_CONSTRAINTS_NOW = "SET CONSTRAINTS ALL IMMEDIATE"
_DEFERRED = f"coalesce(({LIST_DEFERRED.decode()}), '')"
DEFERRED_IF_CHANGED = (
    f"SELECT CASE WHEN {CONSTRAINT_WRITES.decode()} = 0 THEN NULL ELSE {_DEFERRED} END"
)
UNCHANGED_AND_DEFERRED = f"SELECT {CONSTRAINT_WRITES.decode()} = 0, {_DEFERRED}"
# Kept in the connection's info: the template's initially deferred constraints, and whether the
# test on the connection began with pg_constraint's write count at 0 (as the end of the test
# before found it).
_TEMPLATE_DEFERRED = "unmocked_template_deferred"
_BEGAN_WITHOUT_CONSTRAINT_WRITES = "unmocked_began_without_constraint_writes"


class KeptAsyncpgConnection:
    """An event loop's asyncpg connection to the rollback database, kept from test to test.

    A new connection costs a backend, asyncpg's type introspection and an empty statement cache
    (17 ms a test). asyncpg connections belong to the event loop that opened them, so one is
    kept per loop: the plugin makes one of these per pytest-asyncio loop scope and closes it in
    its loop when the scope ends.

    1. A test reuses the connection when it is to the same database, from the same running
       loop, and its socket has heard nothing while idle (a session the server ended has sent
       its notice and closed: a look, no round trip); else it is ended and a new one opened.
    2. The test's end rolls the outer transaction back and resets what a rollback leaves of the
       session (:data:`RESET_KEPT_SESSION`); a test that ended the outer transaction, or broke
       the connection, has it discarded.
    3. :meth:`terminate` ends it at once from outside its loop, which may be idle or closed: the
       socket is shut down, so the backend leaves now (before the database is dropped), and the
       driver's connection is discarded.
    """

    def __init__(self) -> None:
        self.in_test = False
        """True while a test runs on it: the connection budget never takes it back then."""
        self._url: str | None = None
        self._bind: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg Connection under _bind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queries_at_start: int | None = None
        # The database's OID, its session count at the last look (None when the server does not
        # count them: then every test's end looks) and the committed changes it then had.
        self._database_oid = 0
        self._sessions_seen: int | None = None
        self._changes_seen: object = None

    def begin_test(self) -> None:
        """Mark a test's start: from now on it runs on the connection."""
        self.in_test = True
        self._queries_at_start = _queries_sent(self._driver)

    @property
    def backend_pid(self) -> int | None:
        """The backend of the kept connection, None when none is kept."""
        return None if self._driver is None else int(self._driver.get_server_pid())

    def usable(self, url: str) -> bool:
        """Whether the kept connection can serve a test on ``url`` in the running loop; when it
        cannot, it is ended, and the next :meth:`connection` opens a new one."""
        if self._driver is None:
            return False
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop and url == self._url and not self._session_ended():
            return True
        self.terminate()
        return False

    async def connection(self, url: str) -> AsyncConnection:
        """The kept connection to ``url``, opened now when none can serve."""
        if self._bind is None or not self.usable(url):
            bind = await _asyncpg_engine(url).connect()
            raw = await bind.get_raw_connection()
            self._bind, self._driver = bind, raw.driver_connection
            self._url, self._loop = url, asyncio.get_running_loop()
            counts = self._driver.get_server_version().major * 10000 >= SESSIONS_SINCE
            with recording.own_statements():
                (
                    self._database_oid,
                    self._sessions_seen,
                    self._changes_seen,
                ) = await self._driver.fetchrow(
                    LOOK_AT_THE_DATABASE.format(
                        sessions="pg_stat_get_db_sessions(oid)" if counts else "NULL"
                    )
                )
        return self._bind

    async def end_test(
        self, sessions: AsyncSessions, own_pids: Callable[[], Collection[int]] = tuple
    ) -> None:
        """Close the test's sessions, roll its outer transaction back and reset the session.

        Raises :class:`OuterTransactionLost`, the connection discarded, when the test ended the
        outer transaction itself: its savepoints are gone with it, so nothing is rolled back; and
        :class:`OutsideSession` when another session than unmocked's own (``own_pids``) is
        connected to the database, or committed changes to it, since the last look.
        """
        bind, driver = self._bind, self._driver
        assert bind is not None
        if driver.is_closed() or not driver.is_in_transaction():
            sent = _queries_sent(driver)
            if driver.is_closed() or sent is None or sent != self._queries_at_start:
                self.terminate()
                raise OuterTransactionLost()
            # Else the test sent nothing on it: SQLAlchemy begins the outer transaction with the
            # first statement, so none was begun and the rollback sends nothing. The look for
            # other sessions below still counts: its code may have used one of its own.
        await bind.rollback()  # the sessions' savepoints with it: their close sends nothing
        await sessions.close()
        bind.info.pop(_JOINING, None)
        seen = self._sessions_seen
        moved = "" if seen is None else SESSIONS_MOVED.format(oid=self._database_oid, seen=seen)
        with recording.own_statements():
            nothing_left = await driver.execute(RESET_KEPT_SESSION + moved) == NOTHING_LEFT
            clean, sessions_now = True, seen
            if not nothing_left:
                deallocate, clean, sessions_now = await driver.fetchrow(
                    f"{AFTER_RESET_KEPT_SESSION}, "
                    + (SESSIONS.format(oid=self._database_oid) if seen is not None else "NULL")
                )
                if deallocate:
                    await driver.execute(deallocate)
            if seen is None or sessions_now != seen:
                await self._look_for_other_sessions(own_pids())
                self._sessions_seen = sessions_now
        # The counts only grow while the session lives, but a flush of the statistics, when it is
        # idle, can take them back to 0: only a 0 seen here is known to be the next test's start.
        bind.info[_BEGAN_WITHOUT_CONSTRAINT_WRITES] = clean

    async def _look_for_other_sessions(self, own_pids: Collection[int]) -> None:
        """Raise :class:`OutsideSession` if another session is connected, or committed changes
        (as :meth:`unmocked.isolation.UnitOfWork.end_test` does for psycopg's connections)."""
        look = other_sessions(self._database_oid, own_pids)
        deadline = time.monotonic() + OUTSIDE_SESSION_GRACE
        while await self._driver.fetchval(look) != 0:
            if time.monotonic() > deadline:
                raise OutsideSession(still_connected=True)
            await asyncio.sleep(0.001)
        if await self._driver.fetchval(COMMITTED_CHANGES) != self._changes_seen:
            raise OutsideSession(still_connected=False)

    async def close(self) -> None:
        """Close the kept connection in its own loop; end it at once from any other."""
        bind = self._bind
        if bind is None:
            return
        try:
            in_its_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_its_loop = False
        if not in_its_loop or self._session_ended():
            self.terminate()
            return
        self._bind = self._driver = self._url = self._loop = None
        await bind.close()

    def terminate(self) -> None:
        """End the kept connection now, without its loop (idle, closed, or another running)."""
        bind, driver = self._bind, self._driver
        self._bind = self._driver = self._url = self._loop = None
        if bind is None:
            return
        with suppress(OSError, AttributeError):
            _socket_of(driver).shutdown(socket.SHUT_RDWR)
        with suppress(RuntimeError):  # its loop is closed: the socket shut is enough
            # Outside SQLAlchemy's greenlet its asyncpg adapter terminates, without awaiting.
            bind.sync_connection.invalidate()  # type: ignore[union-attr]

    def _session_ended(self) -> bool:
        """True when the idle connection's socket has something to read: the server ended the
        session (its notice, then the end of the stream), or the driver saw it closed."""
        if self._driver.is_closed():
            return True
        try:
            readable, _, _ = select.select([_socket_of(self._driver)], [], [], 0)
        except (OSError, ValueError, AttributeError):
            return True
        return bool(readable)


def _queries_sent(driver: Any) -> int | None:
    """How many queries the asyncpg connection has sent since it opened (its protocol's count,
    which asyncpg gives no public way to); None if unknown."""
    count = getattr(getattr(driver, "_protocol", None), "queries_count", None)
    return count if isinstance(count, int) else None


def _socket_of(driver: Any) -> Any:
    """The socket under an asyncpg connection (asyncpg gives no public way to it)."""
    return driver._transport.get_extra_info("socket")


def _asyncpg_engine(url: str) -> AsyncEngine:
    """One engine per database, without a pool: its connections are kept by
    :class:`KeptAsyncpgConnection`, per event loop; the engine is kept for its dialect set-up."""
    engine = _asyncpg_engines.get(url)
    if engine is None:
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        engine = create_async_engine(with_driver(url, "asyncpg"), poolclass=NullPool)
        _own_the_joining_savepoints(engine.sync_engine.dialect)
        _asyncpg_engines[url] = engine
    return engine


def _own_the_joining_savepoints(dialect: Any) -> None:
    """Send the savepoint a session makes to join the outer transaction, and its release or
    rollback, as unmocked's own statements: they are the unit of work's ``BEGIN`` and ``COMMIT``.

    The joining savepoint is the one made while the connection has none (a ``begin_nested()``
    inside the session makes one under it); its name is remembered for its end. It is sent as
    :data:`~unmocked.isolation.UNIT_OF_WORK`, not by SQLAlchemy's name, which counts up for as long
    as the connection is kept: asyncpg prepares each new statement text in a round trip of its
    own, and one name for every test's savepoints is prepared once. Its statements are sent as
    that fixed text: SQLAlchemy compiles a savepoint clause anew each time (three a test).
    """

    def owned(
        method: Callable[[Any, str], None], starts: bool, joining_statement: str
    ) -> Callable[[Any, str], None]:
        def do(connection: Any, name: str) -> None:
            joining = connection.info.setdefault(_JOINING, set())
            if starts and not connection.in_nested_transaction():
                joining.add(name)
            if name not in joining:
                method(connection, name)
                return
            if not starts:
                joining.discard(name)
            with recording.own_statements():
                connection.exec_driver_sql(joining_statement)

        return do

    dialect.do_savepoint = owned(dialect.do_savepoint, True, f"SAVEPOINT {_JOINING_NAME}")
    dialect.do_release_savepoint = owned(
        dialect.do_release_savepoint, False, f"RELEASE SAVEPOINT {_JOINING_NAME}"
    )
    dialect.do_rollback_to_savepoint = owned(
        dialect.do_rollback_to_savepoint, False, f"ROLLBACK TO SAVEPOINT {_JOINING_NAME}"
    )


_JOINING = "unmocked_joining_savepoints"
_JOINING_NAME = UNIT_OF_WORK.decode()


class AsyncSessions:
    """Opens a test's async sessions on one bind; :meth:`close` closes them all.

    ``joined`` sessions join the outer transaction ``bind`` (a connection) is in, with a
    savepoint per unit of work; their ``commit()`` checks deferred constraints, since releasing
    a savepoint does not. Other sessions use ``bind`` as they would in production.
    """

    def __init__(self, bind: AsyncConnection | AsyncEngine, *, joined: bool) -> None:
        self.bind = bind
        self.joined = joined
        self._opened: list[AsyncSession] = []

    def open(self, session_class: type[S]) -> S:
        """A new ``session_class`` (``AsyncSession`` or a subclass, such as SQLModel's)."""
        if self.joined:
            session = session_class(
                bind=self.bind,
                join_transaction_mode="create_savepoint",
                sync_session_class=_checking_commits(session_class.sync_session_class),
            )
        else:
            session = session_class(bind=self.bind)
        self._opened.append(session)
        return session

    async def close(self) -> None:
        """Close every session opened here; their uncommitted work is rolled back."""
        for session in self._opened:
            await session.close()
        self._opened.clear()


def _driver_row(connection: Connection, query: str) -> Any:
    """The row of a read of unmocked's own, from asyncpg itself: past SQLAlchemy's execution,
    which costs more than the server's answer (a read of the catalogs, which the test's data
    cannot make fail; a statement that can keeps SQLAlchemy's errors, through it)."""
    adapted = cast("AdaptedConnection", connection.connection.dbapi_connection)
    return adapted.run_async(lambda driver: driver.fetchrow(query))


_checking: dict[type[Session], type[Session]] = {}


def _checking_commits(sync_session_class: type[Session]) -> type[Session]:
    """``sync_session_class`` (an ``AsyncSession``'s ``Session``) whose ``commit()`` checks
    deferred constraints first: a subclass made once, with the same name, and its listener on the
    class (listening on each new session costs more than the rest of handing it out)."""
    checking = _checking.get(sync_session_class)
    if checking is None:
        from sqlalchemy import event

        checking = type(
            sync_session_class.__name__,
            (sync_session_class,),
            {"__module__": sync_session_class.__module__, "__doc__": sync_session_class.__doc__},
        )
        event.listen(checking, "before_commit", _check_deferred_constraints)
        _checking[sync_session_class] = checking
    return checking


def _check_deferred_constraints(session: Session) -> None:
    """Before a joined session's commit: flush, then check deferred constraints as COMMIT would.

    All constraints are made ``IMMEDIATE``, which checks the deferred ones now, then those the
    schema declares ``INITIALLY DEFERRED`` are made ``DEFERRED`` again, so that the next unit of
    work starts as a new transaction would. Their list is the template's, kept in the connection's
    info, while pg_constraint's write count is the 0 it was when the test began; else it is read
    anew (the test made or dropped constraints). A nested transaction's commit
    (``begin_nested()``) releases a savepoint in production too, so it checks nothing.
    """
    if session.in_nested_transaction():
        return
    session.flush()
    connection = session.connection()
    info = connection.info
    with recording.own_statements():  # what COMMIT does: not a statement of the test's
        connection.exec_driver_sql(CHECK_CONSTRAINTS_NOW)  # SQLAlchemy's errors, if violated
        template_deferred = info.get(_TEMPLATE_DEFERRED)
        known_start = info.get(_BEGAN_WITHOUT_CONSTRAINT_WRITES, False)
        if known_start and template_deferred is not None:
            deferred = _driver_row(connection, DEFERRED_IF_CHANGED)[0]
            if deferred is None:
                deferred = template_deferred
        else:
            unchanged, deferred = _driver_row(connection, UNCHANGED_AND_DEFERRED)
            if unchanged and known_start:
                info[_TEMPLATE_DEFERRED] = deferred
        if deferred:
            connection.exec_driver_sql(f"SET CONSTRAINTS {deferred} DEFERRED")
