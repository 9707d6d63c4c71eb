"""The fixtures, named for what the test gets; each enters one of the session's context managers.

``unmocked_session``
    This process's :class:`UnmockedSession`. Session-scoped; every fixture below asks for it.
``pg_server``
    The running server (URL, version, provider, data directory). Session-scoped.
``pg``
    A psycopg connection to a migrated database, inside a transaction rolled back after the test.
``sa_engine`` / ``sa_session``
    SQLAlchemy over that same connection, with the same guarantee.
``pg_url``
    The URL of a brand-new migrated database of the test's own, in the template's state.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest

from unmocked.isolation import RollbackConnection
from unmocked.plugin._shared import SESSION_KEY, reported_as_failures
from unmocked.servers import Server
from unmocked.session import UnmockedSession
from unmocked.urls import DatabaseURL, redact

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

REPORTS_KEY = pytest.StashKey[list[pytest.TestReport]]()

# The id of the test being set up, which ``pg`` names in what it says (warnings, failures). A
# fixture that asks for pytest's ``request`` costs every test more than this hook does: pytest
# makes the definition of ``request`` anew each time a fixture asks for it.
_setting_up = [""]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _setting_up[0] = item.nodeid


@pytest.fixture(scope="session")
def unmocked_session(pytestconfig: pytest.Config) -> UnmockedSession:
    """This process's :class:`UnmockedSession`: the server, template and databases of the run."""
    return pytestconfig.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def pg_server(unmocked_session: UnmockedSession) -> Server:
    """The running PostgreSQL server: ``url`` (admin), ``version``, ``provider``, ``data_dir``."""
    with reported_as_failures():
        return unmocked_session.server


@pytest.fixture
def pg(unmocked_session: UnmockedSession) -> Iterator[RollbackConnection]:
    """A psycopg connection to a migrated database; everything the test does is rolled back.

    ``commit()``, ``rollback()`` and ``with conn.transaction():`` behave as in production, and
    ``commit()`` checks deferred constraints. Not kept: ``now()`` is frozen at the test's start and
    sequences do not roll back; use ``pg_url`` for tests that need real commits.
    """
    with reported_as_failures(), unmocked_session.rolled_back(_setting_up[0]) as conn:
        yield conn


@pytest.fixture
def sa_engine(pg: RollbackConnection) -> Engine:
    """A SQLAlchemy Engine over the test's rollback connection (same transaction as ``pg``)."""
    pytest.importorskip("sqlalchemy", reason="sa_engine needs SQLAlchemy: pip install sqlalchemy")
    from unmocked.integrations.sqlalchemy import rollback_engine

    return rollback_engine(pg)


@pytest.fixture
def sa_session(sa_engine: Engine) -> Iterator[Session]:
    """A SQLAlchemy Session whose ``commit()``/``rollback()`` stay inside the test's transaction.

    Hand it to the app under test (for example with a FastAPI dependency override); the app's own
    commits then behave as in production, and nothing is visible to the next test.
    """
    from sqlalchemy.orm import Session

    with Session(bind=sa_engine) as session:
        yield session


@pytest.fixture
def pg_url(unmocked_session: UnmockedSession, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a migrated database of the test's own, in the template's state; a new name per test.

    Every connection sees real commits: use it for tests that commit from several connections,
    run DDL outside a transaction (``CREATE INDEX CONCURRENTLY``) or test locks
    (``FOR UPDATE SKIP LOCKED``). No other test sees what this one did: the database is put back
    to the template's state (or dropped) afterwards, unless the test failed: then it is kept for
    ``unmocked psql NAME``, as the run's summary says. Connections the test leaves open to it
    are named in a warning (``unmocked_leaks``).
    """
    node = request.node
    with (
        reported_as_failures(),
        unmocked_session.fresh_database(
            node.nodeid, keep_if=lambda: _failed(node), report_leaks=True
        ) as url,
    ):
        yield url


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the test, for ``pg_url`` to keep a failed test's database."""
    report = yield
    item.stash.setdefault(REPORTS_KEY, []).append(report)
    return report


def _failed(item: pytest.Item) -> bool:
    return any(report.failed for report in item.stash.get(REPORTS_KEY, []))


@pytest.hookimpl(tryfirst=True)
def pytest_assertrepr_compare(
    config: pytest.Config, op: str, left: object, right: object
) -> list[str] | None:
    """``assert pg_url == expected`` explained as pytest would, with both URLs' passwords hidden.

    A failed comparison of two strings prints a diff of their text, not their ``repr()``, so the
    :class:`DatabaseURL` repr alone would not keep the password out of the report.
    """
    if not isinstance(left, DatabaseURL) and not isinstance(right, DatabaseURL):
        return None
    shown_left, shown_right = (
        redact(side) if isinstance(side, str) else side for side in (left, right)
    )
    explanations = config.hook.pytest_assertrepr_compare(
        config=config, op=op, left=shown_left, right=shown_right
    )
    lines: list[str] = next((list(found) for found in explanations if found), [])
    if shown_left == shown_right and left != right:
        lines = lines or [f"{shown_left!r} {op} {shown_right!r}"]
        lines.append("The URLs differ in their passwords, which unmocked does not print.")
    return lines or None
