"""pytest-django's ``db``, ``transactional_db`` and ``live_server`` on unmocked's server.

Each guarantee is checked by running a small Django project's suite as its users would (in a
subprocess: Django's settings and app registry are per process), on a server of each kind (embedded
and by URL). The project's settings point ``default`` at a port nothing listens on, so a test passes
only if unmocked really took the database over."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from helpers import EACH_KIND_OF_SERVER
from unmocked import ownership

pytest.importorskip("pytest_django", reason="needs pytest-django")

PROVIDERS = EACH_KIND_OF_SERVER

SETTINGS = """
SECRET_KEY = "test-only"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "notes"]
ROOT_URLCONF = "proj.urls"
STATIC_URL = "static/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Nothing listens on port 1: only a database unmocked provides can be reached.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "proj_dev",
        "HOST": "127.0.0.1",
        "PORT": "1",
        "USER": "nobody",
    }
}
"""

MODELS = """
from django.db import models

class Note(models.Model):
    text = models.CharField(max_length=50, unique=True)
"""

INITIAL_MIGRATION = """
from django.db import migrations, models

class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("text", models.CharField(max_length=50, unique=True)),
            ],
        ),
    ]
"""

# A data migration: its row must be in every test's database, and it logs each time it runs.
SEED_MIGRATION = """
import os
from django.db import migrations

def seed(apps, schema_editor):
    apps.get_model("notes", "Note").objects.create(text="seeded")
    if os.environ.get("MIGRATE_LOG"):
        with open(os.environ["MIGRATE_LOG"], "a") as log:
            log.write("migrated\\n")

class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
"""

VIEWS = """
from django.http import JsonResponse
from notes.models import Note

def note_list(request):
    return JsonResponse({"notes": sorted(Note.objects.values_list("text", flat=True))})
"""

URLS = """
from django.urls import path
from notes.views import note_list

urlpatterns = [path("notes/", note_list)]
"""

# Logs "<worker> <fixture> <database>", or the template's name, for the outer test to read.
CONFTEST = """
import os
from django.db import connection

def log_database(kind):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        name = cursor.fetchone()[0]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.environ["DB_LOG"], "a") as log:
        log.write(f"{worker} {kind} {name}\\n")

def log_template(unmocked_session):
    with open(os.environ["TEMPLATE_LOG"], "a") as log:
        log.write(unmocked_session.template().name + "\\n")
"""


@pytest.fixture
def django_project(
    provider_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> pytest.Pytester:
    """A Django project (one app, two migrations, a JSON view) configured for one provider."""
    pytester = provider_project
    monkeypatch.setenv("DB_LOG", str(tmp_path / "databases.log"))
    pytester.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = proj.settings\npythonpath = .\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    files = {
        "proj/__init__.py": "",
        "proj/settings.py": SETTINGS,
        "proj/urls.py": URLS,
        "notes/__init__.py": "",
        "notes/models.py": MODELS,
        "notes/views.py": VIEWS,
        "notes/migrations/__init__.py": "",
        "notes/migrations/0001_initial.py": INITIAL_MIGRATION,
        "notes/migrations/0002_seed.py": SEED_MIGRATION,
        "conftest.py": CONFTEST,
    }
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pytester


def logged_databases(tmp_path: Path) -> list[tuple[str, str, str]]:
    """``(worker, fixture, database)`` for every test that logged its database."""
    lines = (tmp_path / "databases.log").read_text().splitlines()
    return [(worker, kind, name) for worker, kind, name in (line.split() for line in lines)]


@pytest.fixture
def own_template(
    django_project: pytest.Pytester,
    provider: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """Give the project a fingerprint of this test's own, so its first run really builds.

    Yields the file its tests log template names to (``log_template``); those templates are
    dropped afterwards from a shared (url) server.
    """
    template_log = tmp_path / "templates.log"
    monkeypatch.setenv("TEMPLATE_LOG", str(template_log))
    seed = django_project.path / "notes/migrations/0002_seed.py"
    seed.write_text(SEED_MIGRATION + f"\n# {tmp_path}\n")
    yield template_log
    names = set(template_log.read_text().split()) if template_log.exists() else set()
    if names and "UNMOCKED_DATABASE_URL" in provider:
        with psycopg.connect(provider["UNMOCKED_DATABASE_URL"], autocommit=True) as admin:
            for name in names:
                ownership.drop_database(admin, name)


@pytest.mark.parametrize("seed", [1, 2])
def test_db_tests_roll_back_what_they_write(django_project: pytest.Pytester, seed: int) -> None:
    django_project.makepyfile(
        test_rollback="""
        import pytest
        from notes.models import Note

        @pytest.mark.parametrize("attempt", range(3))
        def test_writes_the_same_unique_row(db, attempt):
            Note.objects.create(text="same")
            assert Note.objects.count() == 2  # the seeded row and this one

        @pytest.mark.django_db
        def test_marker_sees_only_the_seeded_row():
            assert list(Note.objects.values_list("text", flat=True)) == ["seeded"]
        """
    )
    result = django_project.runpytest_subprocess(
        "-p", "randomly", f"--randomly-seed={seed}", "--trace-config"
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*unmocked-django*", "unmocked: *, 4 rollback tests, *"])


def test_each_transactional_test_gets_a_fresh_database_whose_commits_others_see(
    django_project: pytest.Pytester, tmp_path: Path
) -> None:
    django_project.makepyfile(
        test_transactional="""
        import psycopg
        import pytest
        from django.db import connection
        from conftest import log_database
        from notes.models import Note

        def other_connection():
            s = connection.settings_dict
            return psycopg.connect(
                dbname=s["NAME"], host=s["HOST"], port=s["PORT"], user=s["USER"],
                password=s["PASSWORD"] or None,
            )

        @pytest.mark.parametrize("attempt", range(2))
        def test_commit_is_seen_by_another_connection(transactional_db, attempt):
            Note.objects.create(text="committed")
            with other_connection() as other:
                texts = other.execute("SELECT text FROM notes_note ORDER BY text").fetchall()
            assert texts == [("committed",), ("seeded",)]
            log_database("transactional")

        @pytest.mark.django_db(transaction=True)
        def test_marker_with_transaction_is_transactional_too():
            Note.objects.create(text="committed")
            assert Note.objects.count() == 2
            log_database("transactional")

        def test_rollback_database(db):
            log_database("db")

        def test_zz_the_transactional_databases_are_gone(unmocked_session):
            import os
            names = [line.split()[2] for line in open(os.environ["DB_LOG"])]
            with psycopg.connect(unmocked_session.server.url) as admin:
                left = admin.execute(
                    "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,)
                ).fetchall()
            assert [row[0] for row in left] == [names[0]]  # only the db tests' database
        """
    )
    result = django_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=5)
    logged = logged_databases(tmp_path)
    rollback = {name for _, kind, name in logged if kind == "db"}
    transactional = [name for _, kind, name in logged if kind == "transactional"]
    assert len(rollback) == 1
    assert len(set(transactional)) == 3
    assert not rollback & set(transactional)


def test_migrations_run_once_per_fingerprint(
    django_project: pytest.Pytester,
    own_template: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    migrate_log = tmp_path / "migrate.log"
    monkeypatch.setenv("MIGRATE_LOG", str(migrate_log))
    django_project.makepyfile(
        test_counting="""
        import pytest
        from conftest import log_template

        def test_rollback(db, unmocked_session):
            log_template(unmocked_session)

        @pytest.mark.parametrize("attempt", range(3))
        def test_fresh(transactional_db, attempt):
            pass
        """
    )
    first = django_project.runpytest_subprocess()
    first.assert_outcomes(passed=4)
    first.stdout.fnmatch_lines(["unmocked: *, template * built in *"])
    second = django_project.runpytest_subprocess()
    second.assert_outcomes(passed=4)
    second.stdout.fnmatch_lines(["unmocked: *, template * reused, *"])
    assert migrate_log.read_text().count("migrated") == 1

    (django_project.path / "notes/migrations/0003_more.py").write_text(
        "from django.db import migrations\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('notes', '0002_seed')]\n"
        "    operations = [migrations.RunSQL('CREATE INDEX note_upper ON notes_note "
        "(upper(text))', migrations.RunSQL.noop)]\n"
    )
    django_project.runpytest_subprocess().assert_outcomes(passed=4)
    assert migrate_log.read_text().count("migrated") == 2
    assert len(set(own_template.read_text().split())) == 2


def test_async_orm_calls_in_transactional_tests_reach_the_tests_own_database(
    django_project: pytest.Pytester,
) -> None:
    """The async ORM queries from asgiref's executor thread, whose connection outlives the test;
    unmocked closes it with the test, so the next test's queries reach the next database."""
    django_project.makepyfile(
        test_async_orm="""
        import pytest
        from notes.models import Note

        @pytest.mark.asyncio
        @pytest.mark.parametrize("attempt", range(3))
        async def test_async_writes(transactional_db, attempt):
            await Note.objects.acreate(text="async")
            assert await Note.objects.acount() == 2
        """
    )
    django_project.runpytest_subprocess().assert_outcomes(passed=3)


def test_xdist_workers_get_databases_of_their_own(
    django_project: pytest.Pytester, tmp_path: Path
) -> None:
    django_project.makepyfile(
        test_workers="""
        import pytest
        from conftest import log_database
        from notes.models import Note

        @pytest.mark.parametrize("n", range(8))
        def test_rollback(db, n):
            Note.objects.create(text="same")
            log_database("db")

        @pytest.mark.parametrize("n", range(4))
        def test_fresh(transactional_db, n):
            Note.objects.create(text="same")
            log_database("transactional")
        """
    )
    result = django_project.runpytest_subprocess("-n", "2", "-p", "randomly")
    result.assert_outcomes(passed=12)
    logged = logged_databases(tmp_path)
    rollback_by_worker: dict[str, set[str]] = {}
    for worker, kind, name in logged:
        if kind == "db":
            rollback_by_worker.setdefault(worker, set()).add(name)
    assert set(rollback_by_worker) == {"gw0", "gw1"}
    assert all(len(names) == 1 for names in rollback_by_worker.values())
    assert rollback_by_worker["gw0"] != rollback_by_worker["gw1"]
    transactional = [name for _, kind, name in logged if kind == "transactional"]
    assert len(set(transactional)) == 4


def test_live_server_serves_a_view_reading_from_the_database(
    django_project: pytest.Pytester,
) -> None:
    django_project.makepyfile(
        test_live="""
        import json
        import urllib.request
        import pytest
        from notes.models import Note

        @pytest.mark.parametrize("text", ["first", "second"])
        def test_view_sees_the_test_commit(live_server, text):
            Note.objects.create(text=text)
            with urllib.request.urlopen(f"{live_server.url}/notes/", timeout=10) as response:
                assert json.load(response) == {"notes": sorted(["seeded", text])}
        """
    )
    django_project.runpytest_subprocess().assert_outcomes(passed=2)


def test_pg_tests_share_the_template_django_built_even_when_they_build_it(
    django_project: pytest.Pytester, own_template: Path
) -> None:
    """A ``pg`` test that runs first builds the template from Django's migrations, although
    pytest-django blocks Django's database access outside ``db`` tests."""
    django_project.makepyfile(
        test_mixed="""
        from conftest import log_template
        from notes.models import Note

        def test_raw_sql(pg, unmocked_session):
            log_template(unmocked_session)
            assert pg.execute("SELECT text FROM notes_note").fetchall() == [("seeded",)]

        def test_orm(db):
            assert Note.objects.get().text == "seeded"
        """
    )
    first = django_project.runpytest_subprocess("-k", "raw_sql")
    first.assert_outcomes(passed=1, deselected=1)
    first.stdout.fnmatch_lines(["unmocked: *, template * built in *"])
    django_project.runpytest_subprocess("-p", "randomly").assert_outcomes(passed=2)
    assert len(set(own_template.read_text().split())) == 1


def test_a_test_mirror_of_default_follows_it_to_every_database(
    django_project: pytest.Pytester,
) -> None:
    settings = django_project.path / "proj/settings.py"
    settings.write_text(
        SETTINGS + 'DATABASES["replica"] = dict(DATABASES["default"], TEST={"MIRROR": "default"})\n'
    )
    django_project.makepyfile(
        test_mirror="""
        import pytest
        from django.db import connections
        from notes.models import Note

        def database(alias):
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT current_database()")
                return cursor.fetchone()[0]

        @pytest.mark.django_db(databases=["default", "replica"])
        def test_rollback():
            assert database("replica") == database("default")

        @pytest.mark.django_db(transaction=True, databases=["default", "replica"])
        @pytest.mark.parametrize("attempt", range(2))
        def test_transactional(attempt):
            Note.objects.create(text="written")
            assert database("replica") == database("default")
            assert Note.objects.using("replica").count() == 2
        """
    )
    django_project.runpytest_subprocess("-p", "randomly").assert_outcomes(passed=3)


def test_a_failing_migration_is_named_and_nothing_is_cached(
    django_project: pytest.Pytester,
) -> None:
    (django_project.path / "notes/migrations/0003_broken.py").write_text(
        "from django.db import migrations\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('notes', '0002_seed')]\n"
        "    operations = [migrations.RunSQL('ALTER TABLE no_such_table ADD x int')]\n"
    )
    django_project.makepyfile("def test_uses_db(db):\n    pass\n")
    result = django_project.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*Django migration notes.0003_broken failed: ProgrammingError: "
            '*relation "no_such_table" does not exist* (PostgreSQL). '
            "Fix it and run again; nothing was cached."
        ]
    )


def test_a_project_whose_database_is_not_postgresql_is_left_to_pytest_django(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNMOCKED_DATABASE_URL", raising=False)
    pytester.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = sqlite_settings\npythonpath = .\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        sqlite_settings=re.sub(
            r"DATABASES = \{.*\}\n",
            'DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}}\n',
            SETTINGS.replace('"notes"', ""),
            flags=re.DOTALL,
        ),
        test_plain="""
        from django.db import connection

        def test_sqlite(db):
            assert connection.vendor == "sqlite"
        """,
    )
    result = pytester.runpytest_subprocess("--trace-config")
    result.assert_outcomes(passed=1)
    assert "unmocked-django" not in result.stdout.str()
    assert "unmocked:" not in result.stdout.str()


def test_without_django_settings_nothing_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("--trace-config")
    result.assert_outcomes(passed=1)
    assert "unmocked-django" not in result.stdout.str()


# One database under three aliases: one with a search_path of its own, one a test mirror.
SHARED_DATABASE_SETTINGS = """
DATABASES["reporting"] = dict(
    DATABASES["default"], OPTIONS={"options": "-c search_path=reporting,public"}
)
DATABASES["replica"] = dict(DATABASES["default"], TEST={"MIRROR": "default"})
"""

REPORTING_MIGRATION = """
from django.db import migrations

class Migration(migrations.Migration):
    dependencies = [("notes", "0002_seed")]
    operations = [
        migrations.RunSQL(
            "CREATE SCHEMA reporting; CREATE TABLE reporting.daily (day date PRIMARY KEY); "
            "INSERT INTO reporting.daily VALUES ('2024-01-01')",
            migrations.RunSQL.noop,
        )
    ]
"""


def test_aliases_sharing_one_database_share_each_clone_of_it(
    django_project: pytest.Pytester,
) -> None:
    """Aliases that name ``default``'s database (another ``search_path`` in ``OPTIONS``, a test
    mirror) reach the clone ``default`` reaches, in rollback and transactional tests alike."""
    settings = django_project.path / "proj/settings.py"
    settings.write_text(SETTINGS + SHARED_DATABASE_SETTINGS)
    (django_project.path / "notes/migrations/0003_reporting.py").write_text(REPORTING_MIGRATION)
    django_project.makepyfile(
        test_shared="""
        import pytest
        from django.db import connections
        from notes.models import Note

        ALIASES = ["default", "reporting", "replica"]

        def value(alias, sql):
            with connections[alias].cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchone()[0]

        def one_database():
            names = {alias: value(alias, "SELECT current_database()") for alias in ALIASES}
            assert len(set(names.values())) == 1, names
            return names["default"]

        @pytest.mark.django_db(databases=ALIASES)
        def test_rollback():
            one_database()
            assert value("reporting", "SELECT count(*) FROM daily") == 1  # its search_path
            assert value("reporting", "SELECT count(*) FROM notes_note") == 1  # public

        @pytest.mark.django_db(transaction=True, databases=ALIASES)
        @pytest.mark.parametrize("attempt", range(2))
        def test_transactional(attempt):
            one_database()
            Note.objects.create(text="committed")
            with connections["reporting"].cursor() as cursor:
                cursor.execute("CREATE TABLE made_through_reporting (id int)")
            assert value("reporting", "SELECT count(*) FROM notes_note") == 2
            assert value("replica", "SELECT count(*) FROM notes_note") == 2
            assert value("default", "SELECT count(*) FROM reporting.made_through_reporting") == 0

        @pytest.mark.django_db(transaction=True, databases=["reporting"])
        def test_transactional_through_reporting_alone():
            with connections["reporting"].cursor() as cursor:
                cursor.execute("INSERT INTO daily VALUES ('2024-01-02')")
            assert value("reporting", "SELECT count(*) FROM daily") == 2
        """
    )
    django_project.runpytest_subprocess("-p", "randomly").assert_outcomes(passed=4)


# An alias on a database of its own on the running server: Django makes its test_<NAME>.
OTHER_DATABASE_SETTINGS = """
DATABASES["other"] = {{
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "proj_other",
    "HOST": {host!r},
    "PORT": {port!r},
    "USER": {user!r},
}}


class MigrateDefaultOnly:
    # The seed migration writes through default: run on "other", it would seed default twice.
    def allow_migrate(self, db, app_label, **hints):
        return db == "default"


DATABASE_ROUTERS = ["proj.settings.MigrateDefaultOnly"]
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_djangos_own_test_databases_are_never_taken_for_a_tests_leftovers(
    django_project: pytest.Pytester, provider: dict[str, str], workers: int
) -> None:
    """Django's ``test_<NAME>`` of an alias unmocked does not serve, on the server unmocked uses,
    appears while the first transactional test runs (in every xdist worker): not that test's
    doing, so no warning names it."""
    if "UNMOCKED_DATABASE_URL" not in provider:
        pytest.skip("the other alias must be on unmocked's server: the one given by URL")
    parts = urlsplit(provider["UNMOCKED_DATABASE_URL"])
    (django_project.path / "proj/settings.py").write_text(
        SETTINGS
        + OTHER_DATABASE_SETTINGS.format(
            host=parts.hostname, port=str(parts.port), user=parts.username
        )
    )
    django_project.makepyfile(
        test_other="""
        import pytest
        from django.db import connections

        @pytest.mark.django_db(transaction=True, databases=["default", "other"])
        @pytest.mark.parametrize("attempt", range(3))
        def test_transactional(attempt):
            with connections["other"].cursor() as cursor:
                cursor.execute("SELECT current_database()")
                assert cursor.fetchone()[0].startswith("test_proj_other")
        """
    )
    result = django_project.runpytest_subprocess(
        "-n", str(workers), "-W", "error::unmocked.UnmockedWarning"
    )
    result.assert_outcomes(passed=3)
    assert "appeared on the server" not in result.stdout.str()


def test_a_server_killed_during_a_django_test_fails_the_later_tests_in_a_line_each(
    django_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    """pytest-django runs rollback tests first, then transactional ones: after the paragraph,
    each kind fails in one line, without Django's traceback of a lost connection."""
    if provider["UNMOCKED_PROVIDER"] == "url":
        pytest.skip("a server given by URL is not unmocked's to kill, nor to watch")
    django_project.makepyfile(
        test_kills="""
        import time

        import psycopg
        from django.db import connection
        from notes.models import Note

        def test_1_kills_the_server(db, pg_server):
            with connection.cursor() as cursor:
                # Runs in the data folder: the postmaster's pid is the first line there.
                cursor.execute("COPY (SELECT 1) TO PROGRAM 'kill -9 $(head -1 postmaster.pid)'")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until it is gone: it refuses connections
                try:
                    psycopg.connect(pg_server.url, connect_timeout=1).close()
                except psycopg.OperationalError:
                    break
                time.sleep(0.02)

        def test_2_db(db):
            Note.objects.count()

        def test_3_transactional(transactional_db):
            Note.objects.count()

        def test_4_db_again(db):
            Note.objects.count()
        """
    )
    result = django_project.runpytest_subprocess("-p", "no:randomly")
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    assert "password" not in output, output  # Django's traceback shows the connection's
    # The short summary repeats the paragraph in full where pytest thinks it runs on CI.
    errors = re.sub("_{2,}", "_", output.split("= ERRORS =")[1].split("short test summary info")[0])
    assert errors.count("Last lines of its log") == 1, output
    django_line = (
        "Django could not connect to its database: the PostgreSQL server of this run does not "
        "answer any more (an earlier error says how, and where its log is), so this test fails."
    )
    for test in ("test_2_db", "test_4_db_again"):
        assert f"ERROR at setup of {test} _\n{django_line}\n" in errors, output
    assert re.search(
        r"ERROR at setup of test_3_transactional _\nThe PostgreSQL server of this run died "
        r"during test_kills.py::test_1_kills_the_server \(that error says how",
        errors,
    ), output
    assert result.parseoutcomes()["passed"] == 1  # the test that killed it
