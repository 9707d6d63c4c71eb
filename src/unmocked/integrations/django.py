"""Django's test databases served by unmocked: clones of a template built by ``migrate``.

Django's test runner creates ``test_<NAME>``, migrates it on every run (or keeps it with
``--reuse-db``, stale as soon as a migration changes) and, after each transactional test, empties
every table and re-creates content types and permissions. unmocked instead clones a database from
the template named by the migrations' fingerprint, once per process for the rollback (``TestCase``)
tests, and once per transactional test, which is dropped afterwards instead of flushed.

Only the ``default`` alias (and aliases that are its ``TEST["MIRROR"]``) is served this way; any
other alias is left to Django's own test-database set-up. Django is imported inside functions.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from unmocked.migrations.django import connected_to
from unmocked.session import UnmockedSession

SERVED_ALIAS = "default"


def serves_django() -> bool:
    """True when Django's ``default`` database is a PostgreSQL one; settings must be configured.

    Asked of the backend (its ``vendor``), so PostGIS and other backends built on Django's
    PostgreSQL backend count too.
    """
    from django.conf import settings
    from django.db import connections

    if SERVED_ALIAS not in settings.DATABASES:
        return False
    return bool(connections[SERVED_ALIAS].vendor == "postgresql")


def served_aliases() -> tuple[str, ...]:
    """``default`` and the aliases that mirror it in tests (replicas): they share its database."""
    from django.db import connections

    mirrors = [
        alias
        for alias in connections
        if connections[alias].settings_dict.get("TEST", {}).get("MIRROR") == SERVED_ALIAS
    ]
    return (SERVED_ALIAS, *mirrors)


def uses_served_database(databases: Any) -> bool:
    """Whether a test whose ``TestCase.databases`` is ``databases`` uses ``default``.

    None is Django's default (``default`` only); ``"__all__"`` is every alias.
    """
    return databases is None or databases == "__all__" or SERVED_ALIAS in databases


@contextmanager
def fresh_django_database(session: UnmockedSession) -> Iterator[str]:
    """Point the served aliases at a brand-new clone of the template; drop it afterwards."""
    with session.fresh_database() as url, connected_to(url, *served_aliases()):
        yield url


@contextmanager
def other_test_databases(
    aliases: Collection[str],
    serialized_aliases: Collection[str],
    *,
    verbosity: int,
    keepdb: bool,
    database_access: Callable[[], AbstractContextManager[object]],
) -> Iterator[None]:
    """Django's own ``test_<NAME>`` databases for ``aliases``, which unmocked does not serve.

    ``database_access`` wraps creating and dropping them (pytest-django's blocker), not the tests.
    """
    from django.test.utils import setup_databases, teardown_databases

    if not aliases:
        yield
        return
    with database_access(), _dependencies_among(aliases):
        old_config = setup_databases(
            verbosity=verbosity,
            interactive=False,
            aliases=set(aliases),
            serialized_aliases=set(serialized_aliases),
            keepdb=keepdb,
        )
    try:
        yield
    finally:
        if not keepdb:
            with database_access():
                teardown_databases(old_config, verbosity=verbosity)


@contextmanager
def _dependencies_among(aliases: Collection[str]) -> Iterator[None]:
    """Each alias's ``TEST["DEPENDENCIES"]`` narrowed to ``aliases``, for ``setup_databases``.

    Django creates test databases after those they depend on (``default``, unless told otherwise)
    and refuses dependencies outside the set it creates; unmocked already provides ``default``.
    """
    from django.db import connections

    saved = {}
    for alias in aliases:
        test_settings = connections[alias].settings_dict.setdefault("TEST", {})
        saved[alias] = test_settings.get("DEPENDENCIES")
        depends_on = test_settings.get("DEPENDENCIES", [SERVED_ALIAS])
        test_settings["DEPENDENCIES"] = [other for other in depends_on if other in aliases]
    try:
        yield
    finally:
        for alias, dependencies in saved.items():
            test_settings = connections[alias].settings_dict["TEST"]
            if dependencies is None:
                del test_settings["DEPENDENCIES"]
            else:
                test_settings["DEPENDENCIES"] = dependencies


@contextmanager
def transaction_test_case(**attributes: Any) -> Iterator[None]:
    """Django's ``TransactionTestCase`` around one test, without the flush of served databases.

    The flush (``TRUNCATE`` of every table, then ``post_migrate`` re-creating content types and
    permissions) exists to return a shared database to its migrated state; the served aliases point
    at a database of the test's own that is dropped afterwards, so flushing it would be wasted work.
    ``attributes`` are the class attributes pytest-django's ``django_db`` marker sets
    (``reset_sequences``, ``databases``, ``serialized_rollback``, ``available_apps``); None keeps
    Django's default.
    """
    from django.test import TransactionTestCase

    served = set(served_aliases())

    class UnmockedTransactionTestCase(TransactionTestCase):  # type: ignore[misc]
        def _fixture_teardown(self) -> None:
            cls = type(self)
            databases = cls.databases
            # Django flushes the aliases in cls.databases: narrow it to the unserved ones.
            cls.databases = frozenset(databases) - served
            try:
                super()._fixture_teardown()
            finally:
                cls.databases = databases

    for name, value in attributes.items():
        if value is not None:
            setattr(UnmockedTransactionTestCase, name, value)
    UnmockedTransactionTestCase.setUpClass()
    test_case = UnmockedTransactionTestCase(methodName="__init__")
    # Recent Django versions run _pre_setup() in setUpClass() already and say so with this flag.
    if not getattr(UnmockedTransactionTestCase, "_pre_setup_ran_eagerly", False):
        test_case._pre_setup()
    try:
        yield
    finally:
        test_case._post_teardown()
        UnmockedTransactionTestCase.tearDownClass()
        UnmockedTransactionTestCase.doClassCleanups()
