"""What a suite's own ``django_db_setup`` adds to the database reaches every kind of Django test.

pytest-django's documented way to seed a suite is to override ``django_db_setup`` and, after the
original ran, load data or create objects in the test database (django-pgtrigger migrates extra
schemas there). Under unmocked, rollback tests run in that very database; transactional tests get
databases of their own, which must start as it stood once the set-up ran, not as the template:
each of them, whatever the one before committed. ``pg_url`` stays the template's.
"""

from __future__ import annotations

import os
import re

import pytest

from helpers import (
    DJANGO_BASE_SETTINGS,
    EACH_KIND_OF_SERVER,
    RUNNING_SERVER_URL,
    a_role_of_its_own,
    write_files,
)

pytest.importorskip("pytest_django", reason="needs pytest-django")

PROVIDERS = EACH_KIND_OF_SERVER

SETTINGS = (
    DJANGO_BASE_SETTINGS
    + """
# Nothing listens on port 1: only a database unmocked provides can be reached.
DATABASES = {
    "default": {"ENGINE": "django.db.backends.postgresql", "NAME": "app", "PORT": "1"}
}
"""
)

# The set-up adds a table of its own with a row, and a user, then hands over.
SEEDING_SETUP = """
import pytest
from django.db import connection

@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    from django.contrib.auth.models import User

    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE made_by_setup (note text)")
            cursor.execute("INSERT INTO made_by_setup VALUES ('from the set-up')")
        User.objects.create(username="seeded")
"""

SEEN_BY_EVERY_TEST = """
import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import connection

def notes():
    with connection.cursor() as cursor:
        cursor.execute("SELECT note FROM made_by_setup ORDER BY note")
        return [note for (note,) in cursor.fetchall()]

def users():
    return sorted(User.objects.values_list("username", flat=True))

def test_1_rollback(db):
    assert notes() == ["from the set-up"] and users() == ["seeded"]
    User.objects.create(username="rolled back")

@pytest.mark.django_db(transaction=True)
def test_2_transactional():
    assert notes() == ["from the set-up"] and users() == ["seeded"]
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO made_by_setup VALUES ('committed by test 2')")
    User.objects.create(username="committed")

def test_3_transactional_again(transactional_db):
    assert notes() == ["from the set-up"] and users() == ["seeded"]
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE made_by_setup")  # a schema change: its database is not reused

@pytest.mark.django_db(transaction=True)
def test_4_and_after_a_schema_change(live_server):
    assert notes() == ["from the set-up"] and users() == ["seeded"]

def test_5_pg_url_is_the_templates(pg_url):
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('made_by_setup')").fetchone() == (None,)
"""


@pytest.fixture
def django_project(provider_project: pytest.Pytester) -> pytest.Pytester:
    """A Django project with Django's own apps only, on one provider."""
    pytester = provider_project
    pytester.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = proj.settings\npythonpath = .\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    write_files(pytester.path, {"proj/__init__.py": "", "proj/settings.py": SETTINGS})
    return pytester


def test_what_the_suites_own_setup_adds_reaches_rollback_and_transactional_tests(
    django_project: pytest.Pytester,
) -> None:
    django_project.makeconftest(SEEDING_SETUP)
    django_project.makepyfile(test_seen=SEEN_BY_EVERY_TEST)
    result = django_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=5)


def test_a_createdb_role_copies_the_set_up_too_and_resets_the_copies(
    django_project: pytest.Pytester, provider: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role with CREATEDB alone (no event triggers, no session_replication_role) gets the
    owner's reset machinery, installed anew in the copy of what the set-up committed."""
    if provider["UNMOCKED_PROVIDER"] != "url":
        pytest.skip("a role of its own is made on the running server")
    django_project.makeconftest(SEEDING_SETUP)
    django_project.makepyfile(test_seen=SEEN_BY_EVERY_TEST)
    with a_role_of_its_own(RUNNING_SERVER_URL, f"unmocked_setup_{os.getpid()}", "CREATEDB") as url:
        monkeypatch.setenv("UNMOCKED_DATABASE_URL", url)
        result = django_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=5)
    assert "cloned for every test" not in result.stdout.str()
    counts = re.search(r"5 fresh databases \((\d+) reset", result.stdout.str())
    assert counts and int(counts[1]) >= 1, result.stdout.str()


@pytest.mark.parametrize("workers", [2])
def test_every_xdist_worker_copies_what_its_own_setup_added(
    django_project: pytest.Pytester, provider: dict[str, str], workers: int
) -> None:
    if provider["UNMOCKED_PROVIDER"] != "embedded":
        pytest.skip("the workers' copies are the same on every provider")
    django_project.makeconftest(SEEDING_SETUP)
    django_project.makepyfile(test_seen=SEEN_BY_EVERY_TEST)
    result = django_project.runpytest_subprocess("-n", str(workers), "-p", "no:randomly")
    result.assert_outcomes(passed=5)


def test_a_setup_that_commits_nothing_costs_no_copy(
    django_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    """Transactional tests then clone the template as ever: no ``_like_`` database is made."""
    if provider["UNMOCKED_PROVIDER"] != "embedded":
        pytest.skip("whether a copy is made does not depend on the provider")
    django_project.makeconftest(
        """
        import pytest
        from django.db import connection

        @pytest.fixture(scope="session")
        def django_db_setup(django_db_setup, django_db_blocker):
            with django_db_blocker.unblock(), connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM auth_user")
        """
    )
    django_project.makepyfile(
        """
        import pytest
        from django.db import connection

        @pytest.mark.django_db(transaction=True)
        def test_transactional():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_database WHERE datname LIKE '%\\\\_like\\\\_%'"
                )
                assert cursor.fetchone() == (0,)
        """
    )
    django_project.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)


def test_a_connection_the_setup_leaves_open_fails_the_transactional_tests_in_a_paragraph(
    django_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    """PostgreSQL copies a database only with nobody in it: the connection is named, rollback
    tests are not hurt, and nothing is a traceback."""
    if provider["UNMOCKED_PROVIDER"] != "embedded":
        pytest.skip("one provider is enough for the error's words")
    django_project.makeconftest(
        """
        import psycopg
        import pytest
        from django.db import connection

        LEFT_OPEN = []

        @pytest.fixture(scope="session")
        def django_db_setup(django_db_setup, django_db_blocker):
            with django_db_blocker.unblock(), connection.cursor() as cursor:
                cursor.execute("CREATE TABLE made_by_setup (id int)")
            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            LEFT_OPEN.append(psycopg.connect(**params, application_name="seeder", autocommit=True))
        """
    )
    django_project.makepyfile(
        """
        import pytest

        def test_rollback(db):
            pass

        @pytest.mark.django_db(transaction=True)
        def test_transactional():
            pass
        """
    )
    result = django_project.runpytest_subprocess("-p", "no:randomly")
    output = result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1, errors=1)
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    assert (
        "Transactional tests start as this process's Django database stood once every "
        "django_db_setup had run, and copying it failed: cannot copy the database"
    ) in output, output
    assert "seeder (pid " in output, output


def test_a_setup_that_replaces_unmockeds_leaves_transactional_tests_their_fresh_databases(
    django_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    """pytest-django's recipe for an existing database: ``django_db_setup`` that does not ask for
    the original. Rollback tests then use the settings' database; transactional ones still get
    unmocked's, as before."""
    if provider["UNMOCKED_PROVIDER"] != "embedded":
        pytest.skip("one provider is enough")
    django_project.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def django_db_setup():
            pass
        """
    )
    django_project.makepyfile(
        """
        import pytest
        from django.contrib.auth.models import User

        @pytest.mark.django_db(transaction=True)
        def test_transactional():
            User.objects.create(username="committed")
        """
    )
    django_project.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)
