"""pytest-django's database fixtures on unmocked's server: wiring over the Django integration.

Registered only when pytest-django (4.5 or newer) is active, ``unmocked_django`` is not ``off``,
Django is configured and its ``default`` database is a PostgreSQL one; otherwise this module adds
nothing and pytest-django works as it always did. When active, ``db``, ``transactional_db``,
``live_server``, the ``django_db`` marker and ``django_db_blocker`` keep their meaning, and:

``django_db_setup``
    Points ``default`` (and the aliases that share its database) at a database of this process's
    own, cloned from the template that Django's migrations built (once per fingerprint, reused by
    later runs and every xdist worker).
``transactional_db`` (and ``live_server``, ``django_db(transaction=True)``)
    Each test gets a fresh clone, dropped afterwards instead of flushed.

Nothing private of pytest-django is imported, so every release from 4.5 on works the same: the
``django_db`` marker and the tests' databases are read here, by Django's own rules. Two fixtures
are overridden by name: ``django_db_setup`` (public) and ``_django_db_helper``, through which
``db``, ``transactional_db`` and ``live_server`` set up each test since pytest-django 4.5; an
older release gets a warning and pytest-django alone.

See :mod:`unmocked.integrations.django` for the how and why.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from unmocked.errors import ServerError, UnmockedWarning
from unmocked.plugin._shared import SESSION_KEY, failure, reported_as_failures
from unmocked.plugin.report import HEADER_KEY
from unmocked.session import UnmockedSession

if TYPE_CHECKING:
    from unmocked.integrations.django import ProcessDatabase

# The first release whose db, transactional_db and live_server all set up through _django_db_helper.
OLDEST_PYTEST_DJANGO = "4.5"

PROCESS_DATABASE_KEY: pytest.StashKey[ProcessDatabase] = pytest.StashKey()
"""This process's Django database, while ``django_db_setup`` holds it."""


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    # trylast: a conftest may configure Django's settings in its own pytest_configure.
    if not config.pluginmanager.hasplugin("django"):
        return
    if config.stash[SESSION_KEY].settings.django == "off":
        return
    from pytest_django.lazy_django import django_settings_is_configured

    if not django_settings_is_configured():
        return
    from unmocked.integrations.django import serves_django

    if not serves_django():
        return
    from packaging.version import Version  # here: ~3 ms to import, for Django's runs only

    installed = Version(importlib.metadata.version("pytest-django"))
    if installed < Version(OLDEST_PYTEST_DJANGO):
        config.issue_config_time_warning(
            UnmockedWarning(
                f"unmocked serves Django's test databases with pytest-django "
                f"{OLDEST_PYTEST_DJANGO} or newer; this is pytest-django {installed}, so "
                "pytest-django sets them up alone, as without unmocked (unmocked's own fixtures "
                "still work). Upgrade it (pip install 'pytest-django>=4.5'), or set "
                "unmocked_django = off to say that this is meant."
            ),
            stacklevel=2,
        )
        return
    config.pluginmanager.register(DjangoDatabaseFixtures(), "unmocked-django")


class DjangoDatabaseFixtures:
    """The fixtures that take over pytest-django's database set-up."""

    def __init__(self) -> None:
        self._driver_noted = False

    def pytest_report_collectionfinish(
        self, config: pytest.Config, start_path: Path, items: Sequence[pytest.Item]
    ) -> list[str]:
        """Under the header (when there is one): a driver Django took because of unmocked."""
        note = self._driver_note(config)
        return [note] if note else []

    @pytest.hookimpl(optionalhook=True, trylast=True)  # after the header, said by plugin.__init__
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """xdist controller: the same, once, under the header it says when it starts the server."""
        note = self._driver_note(node.config)
        reporter = node.config.pluginmanager.get_plugin("terminalreporter")
        if note and reporter is not None:
            reporter.write_line(note)

    def _driver_note(self, config: pytest.Config) -> str | None:
        from unmocked.integrations.django import driver_note

        if self._driver_noted or HEADER_KEY not in config.stash:
            return None
        self._driver_noted = True
        return driver_note()

    # Session fixtures are class methods: pytest deprecates them as instance methods.
    @pytest.fixture(scope="session", autouse=True)
    @classmethod
    def _unmocked_django_migrations(
        cls,
        unmocked_session: UnmockedSession,
        django_db_blocker: Any,
        django_db_use_migrations: bool,
    ) -> None:
        """Django's migrations build the template, unless ``unmocked_migrations`` says otherwise.

        Set before any test runs, so that ``pg`` and ``db`` tests share one template whatever the
        order; the build may happen inside a ``pg`` test, where pytest-django blocks Django's
        database access, hence the blocker.
        """
        from unmocked.migrations.django import DjangoMigrations

        if not unmocked_session.settings.migrations:
            unmocked_session.use_migrations(
                DjangoMigrations(
                    use_migrations=django_db_use_migrations,
                    database_access=django_db_blocker.unblock,
                )
            )

    @pytest.fixture(scope="session")
    @classmethod
    def django_db_setup(
        cls,
        request: pytest.FixtureRequest,
        django_test_environment: None,
        django_db_blocker: Any,
        django_db_keepdb: bool,
        django_db_createdb: bool,
        django_db_modify_db_settings: None,
        unmocked_session: UnmockedSession,
    ) -> Iterator[None]:
        """Django's ``default`` database, for this process: a clone of the migrated template.

        No ``test_<NAME>`` is created or migrated, so ``--reuse-db`` and ``--create-db`` are not
        needed: the template is rebuilt exactly when a migration changes. Aliases that share
        ``default``'s database share the clone; the other aliases the tests use get Django's own
        test databases, as without unmocked. What a suite's own ``django_db_setup`` adds to the
        clone reaches its transactional tests too (see ``ProcessDatabase``).
        """
        from unmocked.integrations.django import (
            other_test_databases,
            process_database,
            served_aliases,
        )

        items = request.session.items
        aliases, serialized_aliases = _databases_for_setup(items)
        with (
            reported_as_failures(),
            process_database(
                unmocked_session,
                transactional_tests=any(_transactional_attributes(item) for item in items),
            ) as database,
            other_test_databases(
                aliases - set(served_aliases()),
                serialized_aliases,
                verbosity=request.config.option.verbose,
                keepdb=django_db_keepdb and not django_db_createdb,
                database_access=django_db_blocker.unblock,
                made=unmocked_session.expect_databases,
            ),
        ):
            request.config.stash[PROCESS_DATABASE_KEY] = database
            try:
                yield
            finally:
                del request.config.stash[PROCESS_DATABASE_KEY]

    @pytest.fixture
    def _django_db_helper(
        self,
        request: pytest.FixtureRequest,
        django_db_setup: None,
        django_db_blocker: Any,
        unmocked_session: UnmockedSession,
    ) -> Iterator[None]:
        """Per-test database set-up: transactional tests get a fresh clone of their own.

        Rollback tests (``db``) and Django's own test classes are left to pytest-django's helper:
        ``TestCase``'s atomic blocks, on this process's database.
        """
        from pytest_django.django_compat import is_django_unittest

        from unmocked.integrations.django import (
            fresh_django_database,
            transaction_test_case,
            uses_served_database,
        )

        # None when the suite's django_db_setup replaces unmocked's instead of building on it.
        process_database = request.config.stash.get(PROCESS_DATABASE_KEY, None)
        test_name = request.node.nodeid
        if process_database is not None:
            with _told_if_the_server_died(unmocked_session, test_name), reported_as_failures():
                process_database.settle()  # the first test: every django_db_setup has run now
        django_test_class = is_django_unittest(request)
        attributes = _transactional_attributes(request.node)
        if attributes is None:
            # pytest-django's own helper: this fixture overrides it, so this is the next in line.
            with (
                _told_if_the_server_died(unmocked_session, test_name),
                nullcontext() if django_test_class else unmocked_session.rolled_back_by_framework(),
            ):
                yield request.getfixturevalue("_django_db_helper")
            return
        database: AbstractContextManager[object]
        if not uses_served_database(attributes["databases"]):
            database = nullcontext()
        elif process_database is None:
            database = fresh_django_database(unmocked_session)
        else:
            database = process_database.fresh()
        with (
            _told_if_the_server_died(unmocked_session, test_name),
            reported_as_failures(),
            django_db_blocker.unblock(),
            database,
            transaction_test_case(**attributes),
        ):
            yield


@contextmanager
def _told_if_the_server_died(session: UnmockedSession, test_name: str) -> Iterator[None]:
    """Django failing to reach a server that died: one paragraph, not Django's traceback.

    The session says the death in full the first time it sees it; once it was said, Django's
    own attempt to connect (whose traceback shows the connection's password) becomes one line.
    """
    try:
        yield
    except Exception:
        with reported_as_failures():
            session.notice_lost_sessions(test_name)  # raises the paragraph if the death is news
        if session.started and not _answers(session):
            how = (
                "was it stopped or restarted?"
                if session.server.provider == "url"
                else "an earlier error says how, and where its log is"
            )
            raise failure(
                ServerError(
                    "Django could not connect to its database: the PostgreSQL server of this run "
                    f"does not answer any more ({how}), so this test fails."
                )
            ) from None
        raise


def _answers(session: UnmockedSession) -> bool:
    """Whether the session's server accepts a connection now."""
    try:
        psycopg.connect(session.server.url, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


@dataclass(frozen=True)
class DjangoDbMarker:
    """The ``django_db`` marker's arguments, by the signature of the newest pytest-django's.

    Read here rather than by pytest-django's own function, whose result changed shape between
    releases (``available_apps`` came in 4.6).
    """

    transaction: bool = False
    reset_sequences: bool = False
    databases: Any = None
    serialized_rollback: bool = False
    available_apps: Any = None

    @classmethod
    def of(cls, item: pytest.Item) -> DjangoDbMarker | None:
        marker = item.get_closest_marker("django_db")
        return None if marker is None else cls(*marker.args, **marker.kwargs)


def _databases_for_setup(items: Sequence[pytest.Item]) -> tuple[set[str], set[str]]:
    """The aliases the collected tests use, and those whose tests ask for a serialized rollback.

    Django's test runner's rule, as pytest-django applies it: a Django test class's ``databases``,
    else the ``django_db`` marker's, else ``default`` for a test using ``db``,
    ``transactional_db`` or ``live_server``.
    """
    from django.test import TransactionTestCase

    from unmocked.integrations.django import aliases_named

    aliases: set[str] = set()
    serialized: set[str] = set()
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        test_class = getattr(item, "cls", None)
        marker = DjangoDbMarker.of(item)
        if test_class is not None and issubclass(test_class, TransactionTestCase):
            databases = getattr(test_class, "databases", None)
            serialize = bool(getattr(test_class, "serialized_rollback", False))
        elif marker is not None:
            databases, serialize = marker.databases, marker.serialized_rollback
        elif {"db", "transactional_db", "live_server"} & set(fixtures):
            databases, serialize = None, False
        else:
            continue
        named = aliases_named(databases)
        aliases.update(named)
        if serialize or "django_db_serialized_rollback" in fixtures:
            serialized.update(named)
    return aliases, serialized


def _transactional_attributes(item: pytest.Item) -> dict[str, Any] | None:
    """The ``TransactionTestCase`` attributes a test asks for, or None when it needs none (a
    rollback test, or a Django test class, which pytest-django sets up itself).

    Read as pytest-django reads them: the ``django_db`` marker, then the fixtures the test uses.
    """
    from pytest_django.django_compat import is_django_unittest

    if is_django_unittest(item):
        return None
    marker = DjangoDbMarker.of(item) or DjangoDbMarker()
    used = getattr(item, "fixturenames", ())
    reset_sequences = marker.reset_sequences or "django_db_reset_sequences" in used
    if not (
        marker.transaction or reset_sequences or "transactional_db" in used or "live_server" in used
    ):
        return None
    return {
        "reset_sequences": reset_sequences,
        "databases": marker.databases,
        "serialized_rollback": marker.serialized_rollback
        or "django_db_serialized_rollback" in used,
        "available_apps": marker.available_apps,
    }
