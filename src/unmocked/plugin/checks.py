"""The ``queries`` fixture, the suite's checks from the ini file, and ``-v``'s heaviest tests.

Statements are recorded while a test itself runs (its fixtures' set-up and teardown are not
counted), for the ``queries`` fixture when the test asks for it, and for the suite's checks
(:mod:`unmocked.checks.suite`) and the ``-v`` summary when a test asks for a database.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest

from unmocked import ownership
from unmocked.checks import Queries, drivers, suite
from unmocked.checks.explaining import Explainer
from unmocked.checks.recording import Recorder
from unmocked.errors import ConfigurationError, UnmockedWarning
from unmocked.plugin._shared import SESSION_KEY, asks_for_a_database
from unmocked.servers import known_state
from unmocked.session import UnmockedSession
from unmocked.settings import Settings
from unmocked.urls import with_database

QUERIES_KEY = pytest.StashKey[Queries]()

N_PLUS_ONE_MARKER = "unmocked_n_plus_one"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{N_PLUS_ONE_MARKER}(mode, threshold=None): this test's N+1 check, as the "
        "unmocked_n_plus_one setting (off, warn or fail) and its threshold say for the suite.",
    )


@pytest.fixture
def queries(unmocked_session: UnmockedSession, request: pytest.FixtureRequest) -> Iterator[Queries]:
    """The statements the test's code sends to the databases unmocked made for this run, while
    the test runs: ``.statements``, ``.count``, ``.clear()``; the checks ``at_most(n)``,
    ``exactly(n)``, ``no_n_plus_one(threshold)``, ``indexed(tables)``; ``explain(sql)``."""
    drivers.install()
    recorded = Queries(_watched(unmocked_session), _explaining_connection(unmocked_session))
    request.node.stash[QUERIES_KEY] = recorded
    try:
        yield recorded
    finally:
        recorded.close()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Hook the drivers before the first test when a collected one will be recorded (it asks
    for ``queries``, or for a database while the suite's checks or ``-v`` watch): psycopg2's
    connections are hooked as they are made, and Django's or a pool's may be made by an earlier
    test or fixture."""
    unmocked = session.config.stash.get(SESSION_KEY, None)
    watching = unmocked is not None and (
        suite.watching(unmocked.settings) or session.config.getoption("verbose") > 0
    )
    if any(
        "queries" in getattr(item, "fixturenames", ()) or (watching and asks_for_a_database(item))
        for item in session.items
    ):
        drivers.install()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Record while the test itself runs; then the suite's checks, when it passed."""
    recorded = item.stash.get(QUERIES_KEY, None)
    session = item.config.stash.get(SESSION_KEY, None)
    if session is None:  # -p no:unmocked's sessions, or a configure that failed
        return (yield)
    verbose = item.config.getoption("verbose") > 0
    settings = _settings_of(item, session)
    whole_test = None
    if (verbose or suite.watching(settings)) and asks_for_a_database(item):
        drivers.install()
        whole_test = Recorder(_watched(session))
    with ExitStack() as stack:
        if recorded is not None:
            stack.enter_context(recorded.recording())
        if whole_test is not None:
            stack.enter_context(whole_test.listening())
        try:
            outcome = yield
        finally:
            if whole_test is not None and verbose:
                statements = whole_test.statements
                session.tally.note_test(
                    item.nodeid, len(statements), sum(s.seconds for s in statements)
                )
    if whole_test is not None and whole_test.statements:
        _check_suite(item, session, settings, whole_test)
    return outcome


def _check_suite(
    item: pytest.Item, session: UnmockedSession, settings: Settings, whole_test: Recorder
) -> None:
    """Warn of, or fail the test for, what the suite's checks find in its statements."""
    explainer = Explainer(_explaining_connection(session))
    try:
        found = suite.findings(settings, whole_test.statements, explainer)
    finally:
        explainer.close()  # its pg_url database ends with the test
    failures = [finding.message for finding in found if finding.fails]
    for finding in found:
        if finding.fails:
            continue
        where = finding.line
        try:
            warnings.warn_explicit(
                f"{item.nodeid}: {finding.message}",
                UnmockedWarning,
                where.path if where else item.nodeid.partition("::")[0],
                where.number if where else 0,
            )
        except UnmockedWarning as error:  # -W error::unmocked.UnmockedWarning
            failures.append(str(error))
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def _settings_of(item: pytest.Item, session: UnmockedSession) -> Settings:
    """The suite's settings, with what the test's ``unmocked_n_plus_one`` marker says instead."""
    marker = item.get_closest_marker(N_PLUS_ONE_MARKER)
    if marker is None:
        return session.settings
    mode = marker.args[0] if marker.args else marker.kwargs.get("mode", "warn")
    threshold = marker.kwargs.get("threshold", session.settings.n_plus_one_threshold)
    try:
        if not isinstance(threshold, int) or threshold < 2:
            raise ConfigurationError(f"threshold={threshold!r} is not a whole number of 2 or more.")
        return dataclasses.replace(
            session.settings, n_plus_one=mode, n_plus_one_threshold=threshold
        )
    except ConfigurationError as error:
        wrong = str(error)
    pytest.fail(f"@pytest.mark.{N_PLUS_ONE_MARKER}: {wrong}", pytrace=False)


def _watched(session: UnmockedSession) -> tuple[str, ...]:
    """The beginnings of the names of the run's databases: the ones statements are kept for."""
    return (f"{ownership.PREFIX}{session.run_id}_",)


def _explaining_connection(session: UnmockedSession) -> Callable[[str], psycopg.Connection[Any]]:
    def connect(database: str) -> psycopg.Connection[Any]:
        server = session.server
        return known_state.connect(with_database(server.url, database), server.major)

    return connect
