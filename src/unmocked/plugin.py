"""The pytest plugin: options, fixtures and xdist wiring over :class:`UnmockedSession`.

Fixtures are named for what the test gets:

``pg_server``
    The running server (URL, version, provider, data directory). Session-scoped.
``pg``
    A psycopg connection to a migrated database, inside a transaction rolled back after the test.
``sa_engine`` / ``sa_session``
    SQLAlchemy over that same connection, with the same guarantee.
``pg_url``
    The URL of a brand-new migrated database of the test's own, dropped after it.

See :mod:`unmocked.isolation` for what rollback isolation keeps and what it cannot.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest.outcomes import Failed

from unmocked.errors import UnmockedError
from unmocked.isolation import RollbackConnection
from unmocked.servers import Server
from unmocked.session import Counters, UnmockedSession
from unmocked.settings import OPTIONS, Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

# Framework plugins: each registers nothing unless its framework is installed and configured.
pytest_plugins = [
    "unmocked.plugin_env",
    "unmocked.plugin_report",
    "unmocked.plugin_django",
    "unmocked.plugin_factories",
    "unmocked.plugin_async",
]

SESSION_KEY = pytest.StashKey[UnmockedSession]()
WORKER_INPUT_KEY = "unmocked_server"
WORKER_OUTPUT_KEY = "unmocked_counters"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unmocked", "real PostgreSQL databases for tests")
    for ini_key, _env_key, help_text in OPTIONS:
        group.addoption(
            f"--{ini_key.replace('_', '-')}", dest=ini_key, default=None, help=help_text
        )
        parser.addini(ini_key, help_text, default="")


def pytest_configure(config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:  # made earlier by plugin_env, to export its database
        return
    flags = {ini_key: config.getoption(ini_key) for ini_key, _, _ in OPTIONS}
    ini = {ini_key: config.getini(ini_key) for ini_key, _, _ in OPTIONS}
    try:
        settings = Settings.from_values(flags, os.environ, Path(config.rootpath), ini)
    except UnmockedError as error:
        raise pytest.UsageError(str(error)) from None
    worker_input = getattr(config, "workerinput", {})
    attach_to = (
        _server_from_json(worker_input[WORKER_INPUT_KEY])
        if WORKER_INPUT_KEY in worker_input
        else None
    )
    config.stash[SESSION_KEY] = UnmockedSession(settings, attach_to=attach_to)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: start the server once and hand it to every worker."""
    session = node.config.stash[SESSION_KEY]
    try:
        server = session.server
    except UnmockedError as error:
        raise pytest.UsageError(str(error)) from None
    node.workerinput[WORKER_INPUT_KEY] = _server_to_json(server)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: add a finished worker's counters to the run's summary."""
    report = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if report:
        node.config.stash[SESSION_KEY].counters.merge(Counters.from_json(report))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """xdist worker: hand this worker's counters to the controller (sent after this hook)."""
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        worker_output[WORKER_OUTPUT_KEY] = session.config.stash[SESSION_KEY].counters.to_json()


def _server_to_json(server: Server) -> str:
    fields = dataclasses.asdict(server)
    fields["data_dir"] = str(server.data_dir) if server.data_dir else None
    fields["owned"] = False  # workers attach; only the controller stops the server
    return json.dumps(fields)


def _server_from_json(text: str) -> Server:
    fields = json.loads(text)
    fields["data_dir"] = Path(fields["data_dir"]) if fields["data_dir"] else None
    return Server(**fields)


def _failure(error: UnmockedError) -> Failed:
    """unmocked's own errors, reported as one paragraph without a stack of internal frames."""
    return Failed(str(error), pytrace=False)


@contextmanager
def reported_as_failures() -> Iterator[None]:
    """Turn unmocked's errors raised inside the block into :func:`_failure`."""
    try:
        yield
    except UnmockedError as error:
        raise _failure(error) from None


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
def pg(
    unmocked_session: UnmockedSession, request: pytest.FixtureRequest
) -> Iterator[RollbackConnection]:
    """A psycopg connection to a migrated database; everything the test does is rolled back.

    ``commit()``, ``rollback()`` and ``with conn.transaction():`` behave as in production, and
    ``commit()`` checks deferred constraints. Not kept: ``now()`` is frozen at the test's start and
    sequences do not roll back; use ``pg_url`` for tests that need real commits.
    """
    with reported_as_failures(), unmocked_session.rolled_back(request.node.nodeid) as conn:
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
    ``unmocked psql NAME``, as the run's summary says.
    """
    with reported_as_failures(), unmocked_session.fresh_database(request.node.nodeid) as url:
        yield url
        if _failed(request.node):
            unmocked_session.keep_fresh_database(url)


REPORTS_KEY = pytest.StashKey[list[pytest.TestReport]]()


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
