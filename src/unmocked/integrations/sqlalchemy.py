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
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from unmocked.checks import recording
from unmocked.isolation import (
    CHECK_DEFERRED_CONSTRAINTS,
    AsyncRollbackConnection,
    OuterTransactionLost,
    RollbackConnection,
)
from unmocked.urls import with_driver

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
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
async def asyncpg_sessions(url: str) -> AsyncIterator[AsyncSessions]:
    """Async sessions over an asyncpg connection to ``url``, inside an outer transaction.

    Each session joins that transaction with a savepoint per unit of work; at the end the
    sessions are closed and the outer transaction rolled back. Raises
    :class:`OuterTransactionLost` at the end when the code inside ended the outer transaction
    itself (a raw ``COMMIT``): the caller must then treat the database as dirty.
    """
    async with _asyncpg_engine(url).connect() as bind:
        await bind.begin()
        sessions = AsyncSessions(bind, joined=True)
        yield sessions
        raw = await bind.get_raw_connection()
        if not raw.driver_connection.is_in_transaction():  # type: ignore[union-attr]
            # The sessions' savepoints are gone with the transaction: close the connection
            # instead of asking it to roll back to them.
            await bind.invalidate()
            raise OuterTransactionLost()
        await sessions.close()
    # Leaving connect() rolls the outer transaction back and closes the connection.


def _asyncpg_engine(url: str) -> AsyncEngine:
    """One engine per database, without a pool.

    asyncpg connections belong to the event loop that opened them, and each test may run in a
    loop of its own, so no connection is kept; the engine is, for its dialect set-up and
    statement cache.
    """
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
    inside the session makes one under it); its name is remembered for its end.
    """

    def owned(method: Callable[[Any, str], None], starts: bool) -> Callable[[Any, str], None]:
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
                method(connection, name)

        return do

    dialect.do_savepoint = owned(dialect.do_savepoint, starts=True)
    dialect.do_release_savepoint = owned(dialect.do_release_savepoint, starts=False)
    dialect.do_rollback_to_savepoint = owned(dialect.do_rollback_to_savepoint, starts=False)


_JOINING = "unmocked_joining_savepoints"


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
            from sqlalchemy import event

            session = session_class(bind=self.bind, join_transaction_mode="create_savepoint")
            event.listen(session.sync_session, "before_commit", _check_deferred_constraints)
        else:
            session = session_class(bind=self.bind)
        self._opened.append(session)
        return session

    async def close(self) -> None:
        """Close every session opened here; their uncommitted work is rolled back."""
        for session in self._opened:
            await session.close()
        self._opened.clear()


def _check_deferred_constraints(session: Session) -> None:
    """Before a joined session's commit: flush, then check deferred constraints as COMMIT would.

    A nested transaction's commit (``begin_nested()``) releases a savepoint in production too,
    so it checks nothing.
    """
    if session.in_nested_transaction():
        return
    from sqlalchemy import text

    session.flush()
    with recording.own_statements():  # what COMMIT does: not a statement of the test's
        session.connection().execute(text(CHECK_DEFERRED_CONSTRAINTS.decode()))
