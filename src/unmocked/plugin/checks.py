"""The ``queries`` fixture: the statements a test sends to its databases, and checks over them."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import psycopg
import pytest

from unmocked import ownership
from unmocked.checks import Queries, drivers
from unmocked.servers import known_state
from unmocked.session import UnmockedSession
from unmocked.urls import with_database

QUERIES_KEY = pytest.StashKey[Queries]()


@pytest.fixture
def queries(unmocked_session: UnmockedSession, request: pytest.FixtureRequest) -> Iterator[Queries]:
    """The statements the test's code sends to the databases unmocked made for this run, while
    the test runs: ``.statements``, ``.count``, ``.clear()``; the checks ``at_most(n)``,
    ``exactly(n)``, ``no_n_plus_one(threshold)``, ``indexed(tables)``; ``explain(sql)``."""
    drivers.install()
    server = unmocked_session.server

    def connect(database: str) -> psycopg.Connection[Any]:
        url = known_state.own_session_conninfo(with_database(server.url, database), server.major)
        return psycopg.connect(url, autocommit=True)

    recorded = Queries((f"{ownership.PREFIX}{unmocked_session.run_id}_",), connect)
    request.node.stash[QUERIES_KEY] = recorded
    try:
        yield recorded
    finally:
        recorded.close()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Hook the drivers before the first test when a collected one asks for ``queries``:
    psycopg2's connections are hooked as they are made, and Django's or a pool's may be made by
    an earlier test or fixture."""
    if any("queries" in getattr(item, "fixturenames", ()) for item in session.items):
        drivers.install()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Record while the test itself runs (its fixtures' set-up and teardown are not counted)."""
    recorded = item.stash.get(QUERIES_KEY, None)
    if recorded is None:
        return (yield)
    with recorded.recording():
        return (yield)
