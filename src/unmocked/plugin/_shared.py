"""What the plugin's modules share: the session's stash key, which tests ask for a database, and
unmocked's errors as test failures.

Private to :mod:`unmocked.plugin`; the library never imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from _pytest.outcomes import Failed

from unmocked.errors import UnmockedError
from unmocked.session import UnmockedSession

SESSION_KEY = pytest.StashKey[UnmockedSession]()

# Fixtures that hand a test a database (or the server). Every one asks for unmocked_session, so
# without the Django integration unmocked_session in a test's closure is the whole question.
_DATABASE_FIXTURES = frozenset(
    {
        "pg_server",
        "pg",
        "pg_url",
        "sa_engine",
        "sa_session",
        "apg",
        "sa_async_session",
        "sqlmodel_session",
        "sqlmodel_async_session",
        "factory_session",
        # pytest-django's, which unmocked serves.
        "db",
        "transactional_db",
        "django_db_setup",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "live_server",
        "admin_user",
        "admin_client",
    }
)


def asks_for_a_database(item: pytest.Item) -> bool:
    """Whether ``item`` will ask unmocked for a server or a database, as far as collection shows.

    Under the Django integration every test has ``unmocked_session`` in its closure (a session
    fixture of it is autouse), and pytest-django hands out databases by marker, at run time: a
    test then asks when it uses a database fixture, has the ``django_db`` marker, or is a Django
    test case with ``databases``. A test this misses still gets its database, started when it
    asks, only later (and under xdist from a server of its worker's own).
    """
    names = set(getattr(item, "fixturenames", ()))
    if "unmocked_session" not in names:
        return False
    if not item.config.pluginmanager.has_plugin("unmocked-django"):
        return True
    return bool(
        names & _DATABASE_FIXTURES
        or item.get_closest_marker("django_db")
        or getattr(getattr(item, "cls", None), "databases", None)
    )


def failure(error: UnmockedError) -> Failed:
    """unmocked's own errors, reported as one paragraph without a stack of internal frames."""
    return Failed(str(error), pytrace=False)


@contextmanager
def reported_as_failures() -> Iterator[None]:
    """Turn unmocked's errors raised inside the block into :func:`failure`."""
    try:
        yield
    except UnmockedError as error:
        raise failure(error) from None
