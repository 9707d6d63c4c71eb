"""The MongoDB fixtures: a database of the test's own, dropped after it (:mod:`unmocked.mongo`).

``unmocked_mongo``
    This process's :class:`~unmocked.mongo.databases.MongoRun`, started on first use.
    Session-scoped; it asks for no PostgreSQL fixture, so a test that uses only MongoDB never
    starts PostgreSQL (nor, under xdist, makes the controller start it).
``mongo_db`` / ``mongo_db_async``
    A pymongo ``Database`` (``AsyncDatabase``) of the test's own, on a client of its own.
``mongo_url``
    The URL of a database of the test's own, for code that connects by itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from unmocked.plugin._shared import SESSION_KEY, reported_as_failures

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase
    from pymongo.database import Database

    from unmocked.mongo.databases import MongoRun


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
def mongo_db_async(unmocked_mongo: MongoRun) -> Iterator[AsyncDatabase[Any]]:
    """As ``mongo_db``, a pymongo ``AsyncDatabase`` (``AsyncMongoClient``, pymongo 4.10+); it
    serves the test's event loop, whichever runner made it (pytest-asyncio, anyio)."""
    from unmocked.mongo.databases import close_in_its_loop

    with reported_as_failures(), unmocked_mongo.database() as name:
        client = unmocked_mongo.async_client_of(name)
        try:
            yield client[name]
        finally:
            close_in_its_loop(client)
