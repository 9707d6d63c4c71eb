"""The MongoDB fixtures: a database of the test's own, dropped after it (:mod:`unmocked.mongo`).

``unmocked_mongo``
    This process's :class:`~unmocked.mongo.databases.MongoRun`, started on first use.
    Session-scoped; it asks for no PostgreSQL fixture, so a test that uses only MongoDB never
    starts PostgreSQL (nor, under xdist, makes the controller start it).
``mongo_db`` / ``mongo_db_async``
    A pymongo ``Database`` (``AsyncDatabase``) of the test's own, on a client of its own. The
    async one is opened and closed in the test's loop by a hidden async fixture made for the
    test's runner, as :mod:`~unmocked.plugin.async_fixtures` does for its sessions: a plain
    fixture's teardown comes after pytest-asyncio closed a function's loop.
``mongo_url``
    The URL of a database of the test's own, for code that connects by itself.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from unmocked.plugin._shared import SESSION_KEY, reported_as_failures
from unmocked.plugin.async_fixtures import _hidden_fixture_for, register_per_runner

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase
    from pymongo.database import Database

    from unmocked.mongo.databases import MongoRun

HIDDEN_FIXTURE = "_unmocked_mongo_db_async"


@pytest.fixture(scope="session")
def unmocked_mongo(pytestconfig: pytest.Config) -> Iterator[MongoRun]:
    """The run's MongoDB server, lease and databases; names carry the session's run id."""
    from unmocked.mongo.databases import MongoRun

    session = pytestconfig.stash[SESSION_KEY]
    with reported_as_failures():
        run = MongoRun.started(session.run_id, os.environ, session.settings.cache_dir)
    with run:
        yield run


@pytest.fixture
def mongo_url(unmocked_mongo: MongoRun) -> Iterator[str]:
    """URL of a MongoDB database of the test's own (``mongodb://.../unmocked_<run>_mongo_<n>``),
    dropped after the test."""
    with reported_as_failures(), unmocked_mongo.database() as name:
        yield unmocked_mongo.url_of(name)


@pytest.fixture
def mongo_db(unmocked_mongo: MongoRun) -> Iterator[Database[Any]]:
    """A pymongo ``Database`` of the test's own, on a client of its own; dropped after the test."""
    with (
        reported_as_failures(),
        unmocked_mongo.database() as name,
        unmocked_mongo.client_of(name) as client,
    ):
        yield client[name]


@pytest.fixture
def mongo_db_async(request: pytest.FixtureRequest, unmocked_mongo: MongoRun) -> AsyncDatabase[Any]:
    """As ``mongo_db``, a pymongo ``AsyncDatabase`` (``AsyncMongoClient``, pymongo 4.10+), made
    and closed in the test's own event loop, under pytest-asyncio (any loop scope) or anyio."""
    database: AsyncDatabase[Any] = request.getfixturevalue(
        _hidden_fixture_for(request, HIDDEN_FIXTURE)
    )
    return database


def _make_hidden_fixture() -> Callable[..., AsyncIterator[AsyncDatabase[Any]]]:
    """A new function each time: pytest-asyncio marks the function object itself."""

    async def database(unmocked_mongo: MongoRun) -> AsyncIterator[AsyncDatabase[Any]]:
        with reported_as_failures(), unmocked_mongo.database() as name:
            # pymongo binds the client to the loop of its first operation: this one, the test's.
            client = unmocked_mongo.async_client_of(name)
            try:
                yield client[name]
            finally:
                await client.close()

    return database


register_per_runner(_make_hidden_fixture, HIDDEN_FIXTURE, globals())
