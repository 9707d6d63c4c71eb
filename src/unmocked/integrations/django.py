"""Django's test databases served by unmocked: clones of a template built by ``migrate``.

Django's test runner creates ``test_<NAME>``, migrates it on every run (or keeps it with
``--reuse-db``, stale as soon as a migration changes) and, after each transactional test, empties
every table and re-creates content types and permissions. unmocked instead clones a database from
the template named by the migrations' fingerprint, once per process for the rollback (``TestCase``)
tests, and once per transactional test, which is dropped afterwards instead of flushed.

Served this way are ``default`` and the aliases that share its database (:func:`served_aliases`);
any other alias is left to Django's own test-database set-up. Django runs on the driver its backend
picked (psycopg 3 whenever importable); :func:`use_psycopg2` keeps it on psycopg2, and
:func:`driver_note` says when unmocked's own dependency made the choice. Django is imported inside
functions.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from unmocked.errors import ConfigurationError, DatabaseError, UnmockedError
from unmocked.migrations.django import close_connections, connected_to
from unmocked.session import UnmockedSession

SERVED_ALIAS = "default"

# The distributions of psycopg 3 itself, and ours: what is left requiring psycopg is the project's.
_PSYCOPG_ITSELF = frozenset({"psycopg", "psycopg-binary", "psycopg-c", "psycopg-pool", "unmocked"})


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


@functools.cache
def served_aliases() -> tuple[str, ...]:
    """``default``, the aliases that share its database, and the aliases that mirror any of them.

    Aliases share a database by Django's test runner's own rule: the same ``test_db_signature()``
    (host, port, engine and test database name; their ``OPTIONS``, a ``search_path`` for example,
    may differ), so Django would make them one test database too. ``TEST["MIRROR"]`` follows its
    primary. Read once per process, before unmocked points any alias at a database of its own.
    """
    from django.db import connections

    def signature(alias: str) -> object:
        return connections[alias].creation.test_db_signature()

    def mirrored(alias: str) -> object:
        return connections[alias].settings_dict.get("TEST", {}).get("MIRROR")

    primary = signature(SERVED_ALIAS)
    sharing = [
        alias
        for alias in connections
        if alias == SERVED_ALIAS or (not mirrored(alias) and signature(alias) == primary)
    ]
    mirrors = [alias for alias in connections if mirrored(alias) in sharing]
    return (*sharing, *mirrors)


def aliases_named(databases: Any) -> tuple[str, ...]:
    """The aliases a ``TestCase.databases`` value (or the ``django_db`` marker's) names.

    None is Django's default (``default`` only); ``"__all__"`` is every alias.
    """
    from django.db import connections

    if databases is None:
        return (SERVED_ALIAS,)
    if databases == "__all__":
        return tuple(connections)
    return tuple(databases)


def uses_served_database(databases: Any) -> bool:
    """Whether a test whose ``TestCase.databases`` is ``databases`` uses a served alias."""
    return bool(set(aliases_named(databases)) & set(served_aliases()))


def driver_note() -> str | None:
    """A line for the run's header when Django runs on psycopg 3 only because of unmocked.

    Django's PostgreSQL backend imports psycopg 3 when it can and psycopg2 only otherwise; it has
    no setting to choose. unmocked requires psycopg 3, so a project that installed psycopg2 (and
    nothing else that requires psycopg 3) silently changes driver under unmocked. None when
    Django runs on psycopg2, psycopg2 is not installed, or another distribution requires psycopg.
    """
    from django.db import connections

    if connections[SERVED_ALIAS].Database.__name__ != "psycopg":
        return None
    if importlib.util.find_spec("psycopg2") is None:
        return None
    if requirers_of_psycopg(importlib.metadata.distributions()):
        return None
    return (
        "unmocked: Django runs on psycopg 3 here, not on the psycopg2 this project installed: "
        "Django takes psycopg 3 whenever it can import it, and only unmocked requires it. To keep "
        "psycopg2, call unmocked.integrations.django.use_psycopg2() at the top of the settings "
        "your tests use (see 'Drivers' in unmocked's docs/django.md)."
    )


def requirers_of_psycopg(distributions: Iterable[importlib.metadata.Distribution]) -> list[str]:
    """The names of ``distributions`` that require psycopg 3, besides psycopg's own and unmocked.

    A requirement only under an extra (``django[psycopg]``) is not counted: installing the
    distribution does not install psycopg for it.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    found = []
    for distribution in distributions:
        name = _normalized(distribution.metadata["Name"] or "")
        if name in _PSYCOPG_ITSELF:
            continue
        for text in distribution.requires or ():
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if _normalized(requirement.name) == "psycopg" and (
                requirement.marker is None or requirement.marker.evaluate({"extra": ""})
            ):
                found.append(name)
                break
    return sorted(set(found))


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def use_psycopg2() -> None:
    """Run Django's PostgreSQL backend on psycopg2, as it does without unmocked installed.

    Django imports its driver once, with its backend: psycopg 3 if it can, else psycopg2. The
    backend is imported here with psycopg 3 hidden for that moment, so it binds to psycopg2 for
    the whole process, while unmocked's own connections keep psycopg 3. Call it before anything
    imports Django's database backend: at the top of the settings module the tests use.
    """
    backend = sys.modules.get("django.db.backends.postgresql.base")
    if backend is not None:
        if backend.Database.__name__ == "psycopg2":
            return
        raise ConfigurationError(
            "use_psycopg2() came too late: Django's PostgreSQL backend was already imported, and "
            "took psycopg 3. Call it at the top of the settings module your tests use "
            "(DJANGO_SETTINGS_MODULE), before anything imports django.db."
        )
    if importlib.util.find_spec("psycopg2") is None:
        raise ConfigurationError(
            "use_psycopg2(): psycopg2 is not installed. Install it (pip install psycopg2-binary, "
            "or psycopg2), or remove the call to let Django use psycopg 3."
        )
    psycopg = sys.modules.pop("psycopg", None)
    sys.modules["psycopg"] = None  # type: ignore[assignment]  # import psycopg now fails
    try:
        importlib.import_module("django.db.backends.postgresql.base")
    finally:
        del sys.modules["psycopg"]
        if psycopg is not None:
            sys.modules["psycopg"] = psycopg


class ProcessDatabase:
    """The database the served aliases point at for this process's rollback tests, and what the
    databases of its transactional tests start as.

    A suite's own ``django_db_setup`` may add to it after unmocked cloned it (``loaddata``, a table,
    a ``migrate`` of its own): rollback tests see that, as they run in it. Transactional tests get
    a database each, in the state it was in when the first test began (every ``django_db_setup``
    had run by then, and no test yet): copies of it when something was committed to it since its
    clone, made once per process; clones of the template otherwise.
    """

    def __init__(self, session: UnmockedSession, url: str, transactional_tests: bool) -> None:
        self._session = session
        self._url = url
        self._transactional_tests = transactional_tests
        self._settled = False
        self._like: str | None = None
        self._copy_failed: UnmockedError | None = None

    def settle(self) -> None:
        """Before every test, and cheap after the first: fix what transactional tests start as.

        A copy that fails fails the transactional tests (:meth:`fresh`), not the test at hand.
        """
        if self._settled:
            return
        self._settled = True
        if not self._transactional_tests:
            return
        for alias in served_aliases():  # PostgreSQL copies a database only with nobody in it
            close_connections(alias)
        try:
            self._like = self._session.fresh_like(self._url)
        except DatabaseError as error:
            self._copy_failed = DatabaseError(
                "Transactional tests start as this process's Django database stood once every "
                f"django_db_setup had run, and copying it failed: {error}"
            )

    @contextmanager
    def fresh(self) -> Iterator[str]:
        """Point the served aliases at a database of one test's own; put it back afterwards."""
        if self._copy_failed is not None:
            raise self._copy_failed
        with fresh_django_database(self._session, like=self._like) as url:
            yield url


@contextmanager
def fresh_django_database(session: UnmockedSession, like: str | None = None) -> Iterator[str]:
    """Point the served aliases at a database of one test's own (see
    :meth:`UnmockedSession.fresh_database`); put them back afterwards."""
    with session.fresh_database(like=like) as url, connected_to(url, *served_aliases()):
        yield url


@contextmanager
def process_database(
    session: UnmockedSession, transactional_tests: bool
) -> Iterator[ProcessDatabase]:
    """Point the served aliases at a clone of the template for this process; drop it afterwards.

    ``transactional_tests``: whether the process may run any (only then may their databases need
    a copy of this one).
    """
    with fresh_django_database(session) as url:
        yield ProcessDatabase(session, url, transactional_tests)


@contextmanager
def other_test_databases(
    aliases: Collection[str],
    serialized_aliases: Collection[str],
    *,
    verbosity: int,
    keepdb: bool,
    database_access: Callable[[], AbstractContextManager[object]],
    made: Callable[[Collection[str]], None],
) -> Iterator[None]:
    """Django's own ``test_<NAME>`` databases for ``aliases``, which unmocked does not serve.

    ``database_access`` wraps creating and dropping them (pytest-django's blocker), not the tests.
    ``made`` is told their names, without an xdist worker's ``_gwN`` (every worker makes its own):
    the warning on databases a test leaves on the server must not name them.
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
    made(
        {
            re.sub(r"_gw\d+$", "", str(connection.settings_dict["NAME"]))
            for connection, *_ in old_config
        }
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
