"""The asyncio fixtures: the same rollback guarantee as ``pg`` and ``sa_session``, for async code.

``apg``
    A psycopg ``AsyncConnection``, rolled back after the test.
``sa_async_session`` / ``sqlmodel_async_session``
    A SQLAlchemy ``AsyncSession`` (or SQLModel's), rolled back after the test, over the driver
    the ``sa_async_driver`` fixture names: ``"asyncpg"`` (default) or ``"psycopg"``.
``sqlmodel_session``
    A SQLModel ``Session`` (it has ``exec()``) over ``sa_engine``: sync, kept with its async twin.

They work under pytest-asyncio (any mode, any loop scope) and under anyio's plugin (asyncio
backend). ``apg`` is a plain fixture: it is begun and ended without an event loop, so it serves any
test's loop. The sessions must be opened and closed inside the test's own loop (asyncpg
connections belong to one loop), and pytest-asyncio and anyio each run only the async fixtures
they recognise, so the public fixtures are plain and hand over to a hidden async fixture made for
the runner of the test at hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import pytest

from unmocked.errors import FixtureError
from unmocked.isolation import AsyncRollbackConnection
from unmocked.plugin._shared import failure, reported_as_failures
from unmocked.session import UnmockedSession

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncSession

    from unmocked.integrations.sqlalchemy import AsyncSessions, KeptAsyncpgConnection

ASYNC_DRIVERS = ("asyncpg", "psycopg")
LoopScope = Literal["function", "class", "module", "package", "session"]
LOOP_SCOPES: tuple[LoopScope, ...] = ("function", "class", "module", "package", "session")
HIDDEN_FIXTURE = "_unmocked_async_sessions"
KEPT_FIXTURE = "_unmocked_kept_asyncpg_connection"

# Fixtures that each hold a connection of their own to the rollback database.
CONNECTION_FIXTURES = {"pg": "pg (or sa_session, sa_engine)", "apg": "apg"}


@pytest.fixture
def apg(
    unmocked_session: UnmockedSession, request: pytest.FixtureRequest
) -> Iterator[AsyncRollbackConnection]:
    """A psycopg ``AsyncConnection`` to a migrated database; all the test does is rolled back.

    ``await commit()``, ``await rollback()`` and ``async with conn.transaction():`` behave as in
    production, and ``commit()`` checks deferred constraints. Works in any event loop. Not kept:
    ``now()`` is frozen at the test's start and sequences do not roll back; use ``pg_url`` for
    tests that need real commits.
    """
    _refuse_a_second_connection(request, "apg")
    _skip_unless_asyncio(request)
    with reported_as_failures(), unmocked_session.async_rolled_back(request.node.nodeid) as conn:
        yield conn


@pytest.fixture
def sa_async_driver() -> str:
    """The driver ``sa_async_session`` uses: ``"asyncpg"``, or ``"psycopg"`` to share ``apg``.

    Override it in a ``conftest.py`` to choose, or parametrize it to run tests with both.
    """
    return "asyncpg"


@pytest.fixture
def sa_async_session(request: pytest.FixtureRequest, sa_async_driver: str) -> AsyncSession:
    """A SQLAlchemy ``AsyncSession`` whose ``commit()``/``rollback()`` stay inside the test.

    Hand it to the app under test (for example with a FastAPI dependency override): the app's
    commits behave as in production, deferred constraints are checked on commit, and nothing is
    visible to the next test. (``sa_async_driver`` is asked for here, though the hidden fixture
    reads it, so that an override with params parametrizes the test.)
    """
    pytest.importorskip(
        "sqlalchemy.ext.asyncio",
        reason="sa_async_session needs SQLAlchemy: pip install 'sqlalchemy[asyncio]'",
    )
    from sqlalchemy.ext.asyncio import AsyncSession

    return _async_sessions(request).open(AsyncSession)


@pytest.fixture
def sqlmodel_async_session(request: pytest.FixtureRequest, sa_async_driver: str) -> Any:
    """As ``sa_async_session``, a SQLModel ``AsyncSession`` (it has ``exec()``)."""
    module = pytest.importorskip(
        "sqlmodel.ext.asyncio.session",
        reason="sqlmodel_async_session needs SQLModel: pip install sqlmodel",
    )
    return _async_sessions(request).open(module.AsyncSession)


@pytest.fixture
def sqlmodel_session(sa_engine: Engine) -> Iterator[Any]:
    """As ``sa_session``, a SQLModel ``Session`` (it has ``exec()``) over the same connection."""
    module = pytest.importorskip(
        "sqlmodel", reason="sqlmodel_session needs SQLModel: pip install sqlmodel"
    )
    with module.Session(bind=sa_engine) as session:
        yield session


def _refuse_a_second_connection(request: pytest.FixtureRequest, wanted: str) -> None:
    """Fail a test that asks for two connections to the rollback database.

    Each would be in a transaction of its own: neither sees the other's writes, and a row lock one
    holds blocks the other until the test times out.
    """
    for fixture, description in CONNECTION_FIXTURES.items():
        if fixture != wanted and fixture in request.fixturenames:
            raise failure(
                FixtureError(
                    f"{request.node.nodeid} asks for {description} and {wanted}: two "
                    "connections, each in a transaction of its own, so neither sees the other's "
                    "writes and a lock one holds can block the other forever. Use one per test: "
                    "pg and sa_session in sync tests; apg, or sa_async_session with "
                    "sa_async_driver 'psycopg', in async ones."
                )
            )


def _async_sessions(request: pytest.FixtureRequest) -> AsyncSessions:
    """The hidden fixture that opens sessions in the event loop this test runs in."""
    if request.getfixturevalue("sa_async_driver") == "asyncpg":
        # Set up from here: pytest-asyncio sets an async fixture up by running its loop, which
        # already runs while the hidden fixture is set up.
        request.getfixturevalue(_hidden_fixture_for(request, KEPT_FIXTURE))
    sessions: AsyncSessions = request.getfixturevalue(_hidden_fixture_for(request))
    return sessions


def _skip_unless_asyncio(request: pytest.FixtureRequest) -> bool:
    """True for a test anyio runs; skip it when anyio runs it on another backend than asyncio."""
    if "anyio_backend" not in request.fixturenames:
        return False
    backend = request.getfixturevalue("anyio_backend_name")
    if backend != "asyncio":
        pytest.skip(f"psycopg, asyncpg and pymongo's async client run on asyncio, not on {backend}")
    return True


def _hidden_fixture_for(request: pytest.FixtureRequest, hidden: str = HIDDEN_FIXTURE) -> str:
    """The name of the twin of fixture ``hidden`` made for the runner of the test at hand:
    ``<hidden>_anyio`` or ``<hidden>_asyncio_<loop scope>`` (see :func:`register_per_runner`)."""
    if _skip_unless_asyncio(request):
        return f"{hidden}_anyio"
    if pytest_asyncio is None:
        raise failure(
            FixtureError(
                f"{request.node.nodeid}: the async session fixtures need an async test runner. "
                "Install pytest-asyncio (and mark the test @pytest.mark.asyncio), or use anyio's "
                "plugin (@pytest.mark.anyio)."
            )
        )
    # The session must live in the loop the test runs in, which pytest-asyncio picks per test.
    marker = request.node.get_closest_marker("asyncio")
    kwargs = marker.kwargs if marker else {}
    loop_scope = (
        kwargs.get("loop_scope") or kwargs.get("scope") or _default_test_loop_scope(request)
    )
    return f"{hidden}_asyncio_{loop_scope}"


def _default_test_loop_scope(request: pytest.FixtureRequest) -> str:
    try:
        return str(request.config.getini("asyncio_default_test_loop_scope") or "function")
    except ValueError:  # a pytest-asyncio older than the option: every test has its own loop
        return "function"


def _make_hidden_fixture() -> Callable[..., AsyncIterator[AsyncSessions]]:
    """A new function each time: pytest-asyncio marks the function object itself."""

    async def sessions(
        request: pytest.FixtureRequest,
        unmocked_session: UnmockedSession,
        sa_async_driver: str,
    ) -> AsyncIterator[AsyncSessions]:
        from unmocked.integrations import sqlalchemy as integration

        if sa_async_driver not in ASYNC_DRIVERS:
            raise failure(
                FixtureError(
                    f"the sa_async_driver fixture returned {sa_async_driver!r}; unmocked knows "
                    f"{' and '.join(map(repr, ASYNC_DRIVERS))}. Fix its override in conftest.py."
                )
            )
        if sa_async_driver == "psycopg":
            async with integration.psycopg_sessions(request.getfixturevalue("apg")) as sessions:
                yield sessions
            return
        _refuse_a_second_connection(request, "sa_async_session")
        pytest.importorskip(
            "asyncpg",
            reason="sa_async_session uses asyncpg unless the sa_async_driver fixture says "
            "'psycopg': pip install asyncpg, or override sa_async_driver",
        )
        kept = request.getfixturevalue(_hidden_fixture_for(request, KEPT_FIXTURE))
        with (
            reported_as_failures(),
            unmocked_session.rolled_back_by_driver(request.node.nodeid, kept) as url,
        ):
            own_pids = unmocked_session.own_backend_pids
            async with integration.asyncpg_sessions(url, kept, own_pids) as sessions:
                yield sessions

    return sessions


def _make_kept_connection_fixture() -> Callable[..., AsyncIterator[KeptAsyncpgConnection]]:
    """The asyncpg connection kept for the loop of one scope, closed in that loop at its end
    (before the loop closes, and before ``unmocked_session``, which it asks for, drops its
    database)."""

    async def kept(unmocked_session: UnmockedSession) -> AsyncIterator[KeptAsyncpgConnection]:
        from unmocked.integrations.sqlalchemy import KeptAsyncpgConnection

        connection = KeptAsyncpgConnection()
        try:
            yield connection
        finally:
            await connection.close()

    return kept


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - anyio's plugin alone is enough
    pytest_asyncio = None  # type: ignore[assignment]


def register_per_runner(
    make: Callable[[], Any], hidden: str, namespace: dict[str, Any], per_loop: bool = False
) -> None:
    """Put in ``namespace`` (a plugin module's globals) one fixture ``make()`` per runner: for
    anyio, and for pytest-asyncio in each loop scope, named as :func:`_hidden_fixture_for` says.

    Each is made for one test, or with ``per_loop`` for as long as its loop lives: for a
    pytest-asyncio loop scope's, that scope (anyio's runner may end after each test)."""
    namespace[f"{hidden}_anyio"] = pytest.fixture(make(), name=f"{hidden}_anyio")
    if pytest_asyncio is not None:
        for scope in LOOP_SCOPES:
            name = f"{hidden}_asyncio_{scope}"
            namespace[name] = pytest_asyncio.fixture(
                make(), scope=scope if per_loop else "function", loop_scope=scope, name=name
            )


register_per_runner(_make_hidden_fixture, HIDDEN_FIXTURE, globals())
register_per_runner(_make_kept_connection_fixture, KEPT_FIXTURE, globals(), per_loop=True)
