"""pytest-django's database fixtures on unmocked's server: wiring over the Django integration.

Registered only when pytest-django is active, Django is configured and its ``default`` database is
a PostgreSQL one; otherwise this module adds nothing and pytest-django works as it always did.
When active, ``db``, ``transactional_db``, ``live_server``, the ``django_db`` marker and
``django_db_blocker`` keep their meaning, and:

``django_db_setup``
    Points ``default`` at a database of this process's own, cloned from the template that Django's
    migrations built (once per fingerprint, reused by later runs and every xdist worker).
``transactional_db`` (and ``live_server``, ``django_db(transaction=True)``)
    Each test gets a fresh clone, dropped afterwards instead of flushed.

See :mod:`unmocked.integrations.django` for the how and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import pytest

from unmocked.plugin._shared import reported_as_failures
from unmocked.session import UnmockedSession


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    # trylast: a conftest may configure Django's settings in its own pytest_configure.
    if not config.pluginmanager.hasplugin("django"):
        return
    from pytest_django.lazy_django import django_settings_is_configured

    if not django_settings_is_configured():
        return
    from unmocked.integrations.django import serves_django

    if serves_django():
        config.pluginmanager.register(DjangoDatabaseFixtures(), "unmocked-django")


class DjangoDatabaseFixtures:
    """The fixtures that take over pytest-django's database set-up."""

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
        needed: the template is rebuilt exactly when a migration changes. Other aliases, unless
        they mirror ``default``, get Django's own test databases, as without unmocked.
        """
        from pytest_django.fixtures import _get_databases_for_setup

        from unmocked.integrations.django import (
            fresh_django_database,
            other_test_databases,
            served_aliases,
        )

        aliases, serialized_aliases = _get_databases_for_setup(request.session.items)
        with (
            reported_as_failures(),
            fresh_django_database(unmocked_session),
            other_test_databases(
                set(aliases) - set(served_aliases()),
                serialized_aliases,
                verbosity=request.config.option.verbose,
                keepdb=django_db_keepdb and not django_db_createdb,
                database_access=django_db_blocker.unblock,
            ),
        ):
            yield

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

        django_test_class = is_django_unittest(request)
        attributes = None if django_test_class else _transactional_attributes(request)
        if attributes is None:
            # pytest-django's own helper: this fixture overrides it, so this is the next in line.
            with (
                nullcontext() if django_test_class else unmocked_session.rolled_back_by_framework()
            ):
                yield request.getfixturevalue("_django_db_helper")
            return
        serves = uses_served_database(attributes["databases"])
        with (
            reported_as_failures(),
            django_db_blocker.unblock(),
            fresh_django_database(unmocked_session) if serves else nullcontext(),
            transaction_test_case(**attributes),
        ):
            yield


def _transactional_attributes(request: pytest.FixtureRequest) -> dict[str, Any] | None:
    """The ``TransactionTestCase`` attributes a test asks for, or None when it needs none.

    Read as pytest-django reads them: the ``django_db`` marker, then the fixtures the test uses.
    """
    from pytest_django.fixtures import validate_django_db

    marker = request.node.get_closest_marker("django_db")
    transaction, reset_sequences, databases, serialized_rollback, available_apps = (
        validate_django_db(marker) if marker else (False, False, None, False, None)
    )
    used = request.fixturenames
    reset_sequences = reset_sequences or "django_db_reset_sequences" in used
    if not (transaction or reset_sequences or "transactional_db" in used or "live_server" in used):
        return None
    return {
        "reset_sequences": reset_sequences,
        "databases": databases,
        "serialized_rollback": serialized_rollback or "django_db_serialized_rollback" in used,
        "available_apps": available_apps,
    }
