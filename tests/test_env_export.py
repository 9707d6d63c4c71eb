"""Suites that read their database from the environment run unchanged on unmocked's database.

One small project holds the five kinds of suite real projects have: a module that reads
``DATABASE_URL`` when conftest.py imports it, one that connects with the libpq variables, one that
creates and drops databases of its own, one that uses SQLAlchemy with asyncpg URLs, and a Django
settings module that parses ``DATABASE_URL``; plus a suite that needs a server setting
(``max_prepared_transactions``). Each runs under ``unmocked run -- pytest`` and under the
``unmocked_export_env`` option, with and without ``-n 2``, on the embedded server only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import (
    PYTEST_COMMAND,
    embedded_env,
    needs_embedded,
    run_to_end,
    run_unmocked,
    write_files,
)

pytestmark = needs_embedded

PYPROJECT = """
[tool.pytest.ini_options]
unmocked_migrations = "migrations"
unmocked_server_settings = "max_prepared_transactions=10"
unmocked_env = ["SA_ASYNC_URL={url:asyncpg}", "DATABASE__HOSTNAME={host}", "DB_PORT={port}"]
addopts = "-p no:django -p no:randomly"
asyncio_default_fixture_loop_scope = "function"
"""

FILES = {
    "migrations/001_users.sql": "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE);\n",
    # Read at import time, before any fixture could set anything up.
    "app/__init__.py": "",
    "app/db.py": """
        import os
        import psycopg

        DATABASE_URL = os.environ["DATABASE_URL"]

        def connect():
            return psycopg.connect(DATABASE_URL)
    """,
    "conftest.py": """
        import os
        from app import db

        WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
    """,
    "test_import_time_url.py": """
        from app import db
        from conftest import WORKER

        def test_the_url_names_a_migrated_database():
            with db.connect() as conn:
                conn.execute("INSERT INTO users (email) VALUES (%s)", (f"{WORKER}@example.com",))
                assert conn.execute("SELECT count(*) FROM users WHERE email = %s",
                                    (f"{WORKER}@example.com",)).fetchone()[0] == 1
                conn.rollback()
    """,
    "test_libpq_variables.py": """
        import os
        import psycopg

        def test_an_empty_connection_string_reaches_the_exported_database():
            with psycopg.connect("") as conn:
                name, = conn.execute("SELECT current_database()").fetchone()
                assert name == os.environ["PGDATABASE"] and name.startswith("unmocked_")
                assert conn.execute("SELECT to_regclass('users') IS NOT NULL").fetchone()[0]
            assert os.environ["DATABASE__HOSTNAME"] == os.environ["PGHOST"]
            assert os.environ["DB_PORT"] == os.environ["PGPORT"]
    """,
    "test_own_databases.py": """
        import psycopg
        from psycopg import sql
        from app import db
        from conftest import WORKER

        def test_the_role_creates_and_force_drops_databases_and_roles():
            scratch = f"suite_scratch_{WORKER}"
            with db.connect() as conn:
                conn.autocommit = True
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
                holder = psycopg.connect("", dbname=scratch)  # still connected when dropped
                drop = sql.SQL("DROP DATABASE {} WITH (FORCE)")
                conn.execute(drop.format(sql.Identifier(scratch)))
                holder.close()
                # Left behind on purpose: the run must remove them.
                left, role = f"suite_left_{WORKER}", f"suite_role_{WORKER}"
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(left)))
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                with psycopg.connect("", dbname="postgres", autocommit=True) as other:
                    other.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(role)))
                    other.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                        sql.Identifier(role), sql.Identifier(role)))
    """,
    "test_prepared_transactions.py": """
        import uuid
        from app import db

        def test_two_phase_commit_needs_the_server_setting():
            gid = uuid.uuid4().hex
            with db.connect() as conn:
                conn.autocommit = True
                conn.execute("BEGIN")
                conn.execute("INSERT INTO users (email) VALUES (%s)", (gid,))
                conn.execute(f"PREPARE TRANSACTION '{gid}'")
                conn.execute(f"COMMIT PREPARED '{gid}'")
    """,
    "test_sqlalchemy_asyncpg.py": """
        import asyncio
        import os
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        ENGINE_URL = os.environ["SA_ASYNC_URL"]

        def test_an_asyncpg_engine_from_the_exported_url():
            async def count():
                engine = create_async_engine(ENGINE_URL)
                async with engine.connect() as conn:
                    found = (await conn.execute(text("SELECT count(*) FROM users"))).scalar()
                await engine.dispose()
                return found

            assert ENGINE_URL.startswith("postgresql+asyncpg://")
            assert asyncio.run(count()) >= 0
    """,
    "proj/__init__.py": "",
    "proj/settings.py": """
        import os
        from urllib.parse import unquote, urlsplit

        url = urlsplit(os.environ["DATABASE_URL"])
        SECRET_KEY = "test-only"
        INSTALLED_APPS = ["django.contrib.contenttypes"]
        USE_TZ = True
        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": unquote(url.path.lstrip("/")),
                "USER": unquote(url.username or ""),
                "PASSWORD": unquote(url.password or ""),
                "HOST": url.hostname,
                "PORT": url.port,
            }
        }
    """,
    "test_django_settings.py": """
        import os

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        import django

        django.setup()
        from django.db import connection

        def test_django_connects_to_the_exported_database():
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_database()")
                assert cursor.fetchone()[0] == os.environ["PGDATABASE"]
            connection.close()
    """,
}

CHECK_LEFTOVERS = """
import psycopg
with psycopg.connect("") as conn:
    print(sorted(r[0] for r in conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'suite%' OR datname LIKE '%_env_%' "
        "UNION ALL SELECT rolname FROM pg_roles WHERE rolname LIKE 'suite%'")))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The five-kind project, unchanged by the tests that run it."""

    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    return write_files(tmp_path, FILES)


def pytest_command(parallel: bool) -> list[str]:
    return [*PYTEST_COMMAND, "-q", *(["-n", "2"] if parallel else [])]


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "xdist"])
@pytest.mark.parametrize("how", ["unmocked-run", "pytest-option"])
def test_a_suite_that_reads_its_database_from_the_environment_runs_unchanged(
    project: Path, unmocked_cache: Path, how: str, parallel: bool
) -> None:
    env = embedded_env(unmocked_cache)
    if how == "unmocked-run":
        result = run_unmocked("run", "--", *pytest_command(parallel), cwd=project, env=env)
    else:
        env["UNMOCKED_EXPORT_ENV"] = "true"
        result = run_to_end(pytest_command(parallel), cwd=project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout

    left = run_unmocked("run", "--", sys.executable, "-c", CHECK_LEFTOVERS, cwd=project, env=env)
    assert left.returncode == 0, left.stderr
    # Only the checking run's own database: the suite's databases, its role and the run's
    # exported database are all gone.
    assert [name for name in eval(left.stdout) if "_env_" not in name] == []
    assert len(eval(left.stdout)) == 1


def test_per_worker_databases_give_each_xdist_worker_its_own(
    project: Path, unmocked_cache: Path
) -> None:
    (project / "test_per_worker.py").write_text(
        "import os, pytest\n"
        "@pytest.mark.parametrize('n', range(4))\n"
        "def test_db(n): print('DB', os.environ['PYTEST_XDIST_WORKER'], os.environ['PGDATABASE'])\n"
    )
    env = embedded_env(
        unmocked_cache, UNMOCKED_EXPORT_ENV="true", UNMOCKED_ENV_DATABASE="per-worker"
    )
    result = subprocess.run(
        [*pytest_command(True), "-rA", "test_per_worker.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pairs = {
        tuple(line.split()[1:]) for line in result.stdout.splitlines() if line.startswith("DB ")
    }
    workers = {worker for worker, _ in pairs}
    assert len(pairs) == len(workers) == 2, result.stdout  # one database per worker, never shared


# Every exported form, each on its own: the libpq variables (libpq's defaults), DATABASE_URL, and
# templates (a URL, a driver URL, and the parts as a project's settings hold them).
FORMS_PYPROJECT = """
[tool.pytest.ini_options]
unmocked_migrations = "migrations"
unmocked_env = [
    "APP_URL={url}",
    "SA_URL={url:psycopg}",
    "DB_HOST={host}",
    "DB_PORT={port}",
    "DB_USER={user}",
    "DB_PASSWORD={password}",
    "DB_NAME={database}",
    "POSTGRES_PASSWORD={password}",
]
addopts = "-p no:django -p no:randomly"
"""

FORMS = """
import os
import psycopg
import pytest

EXPORTED = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "DATABASE_URL", "APP_URL",
            "SA_URL", "DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME",
            "POSTGRES_PASSWORD")

@pytest.fixture
def no_pgpassword(monkeypatch):
    # Each form must carry the secret itself, not lean on the libpq variable.
    monkeypatch.delenv("PGPASSWORD")

def reaches_the_database(conn):
    name, = conn.execute("SELECT current_database()").fetchone()
    assert name == os.environ["PGDATABASE"]
    assert conn.execute("SELECT to_regclass('users') IS NOT NULL").fetchone()[0]

def test_every_form_is_exported_and_none_is_empty():
    assert {name: bool(os.environ.get(name)) for name in EXPORTED} == dict.fromkeys(EXPORTED, True)
    assert os.environ["POSTGRES_PASSWORD"] == os.environ["DB_PASSWORD"] == os.environ["PGPASSWORD"]

def test_the_server_refuses_a_login_without_its_secret(no_pgpassword):
    parts = dict(host=os.environ["PGHOST"], port=os.environ["PGPORT"], user=os.environ["PGUSER"],
                 dbname=os.environ["PGDATABASE"])
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(**parts).close()
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(**parts, password="not-the-secret").close()

def test_the_libpq_variables_with_libpqs_defaults():
    with psycopg.connect("") as conn:
        reaches_the_database(conn)

def test_database_url(no_pgpassword):
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        reaches_the_database(conn)

def test_a_url_template(no_pgpassword):
    with psycopg.connect(os.environ["APP_URL"]) as conn:
        reaches_the_database(conn)

def test_a_driver_url_template(no_pgpassword):
    from sqlalchemy import create_engine, text
    engine = create_engine(os.environ["SA_URL"])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar() == os.environ["PGDATABASE"]
    engine.dispose()

def test_templates_of_the_parts(no_pgpassword):
    with psycopg.connect(host=os.environ["DB_HOST"], port=os.environ["DB_PORT"],
                         user=os.environ["DB_USER"], password=os.environ["DB_PASSWORD"],
                         dbname=os.environ["DB_NAME"]) as conn:
        reaches_the_database(conn)
"""

# The same forms from a command that is not pytest.
FORMS_COMMAND = """
import os
import sys
import psycopg

del os.environ["PGPASSWORD"]
for url in (os.environ["DATABASE_URL"], os.environ["APP_URL"]):
    psycopg.connect(url).close()
psycopg.connect(host=os.environ["DB_HOST"], port=os.environ["DB_PORT"], user=os.environ["DB_USER"],
                password=os.environ["POSTGRES_PASSWORD"], dbname=os.environ["DB_NAME"]).close()
print("every form connected")
"""


@pytest.fixture
def forms_project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(FORMS_PYPROJECT)
    return write_files(
        tmp_path,
        {
            "migrations/001_users.sql": FILES["migrations/001_users.sql"],
            "test_forms.py": FORMS,
            "forms_command.py": FORMS_COMMAND,
        },
    )


@pytest.mark.parametrize("how", ["unmocked-run", "pytest-option", "unmocked-run-command"])
def test_every_exported_form_carries_the_secret_of_the_server_unmocked_started(
    forms_project: Path, unmocked_cache: Path, how: str
) -> None:
    env = embedded_env(unmocked_cache)
    if how == "unmocked-run-command":
        command = [sys.executable, "forms_command.py"]
        result = run_unmocked("run", "--", *command, cwd=forms_project, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "every form connected" in result.stdout
        return
    if how == "unmocked-run":
        result = run_unmocked("run", "--", *pytest_command(False), cwd=forms_project, env=env)
    else:
        env["UNMOCKED_EXPORT_ENV"] = "true"
        result = run_to_end(pytest_command(False), cwd=forms_project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout


def test_the_export_and_the_whole_plugin_can_be_turned_off(
    forms_project: Path, unmocked_cache: Path
) -> None:
    (forms_project / "test_off.py").write_text(
        "import os\n"
        "def test_nothing_exported():\n"
        "    assert 'DATABASE_URL' not in os.environ and 'PGDATABASE' not in os.environ\n"
    )
    pyproject = forms_project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "[tool.pytest.ini_options]\n", "[tool.pytest.ini_options]\nunmocked_export_env = true\n"
        )
    )
    env = embedded_env(unmocked_cache)
    off = {**env, "UNMOCKED_EXPORT_ENV": "false"}  # over the project's setting, as CI would

    exported = run_to_end([*pytest_command(False), "test_forms.py"], cwd=forms_project, env=env)
    not_exported = run_to_end([*pytest_command(False), "test_off.py"], cwd=forms_project, env=off)
    no_plugin = run_to_end(
        [*pytest_command(False), "-p", "no:unmocked", "test_off.py"], cwd=forms_project, env=env
    )

    assert "7 passed" in exported.stdout, exported.stdout + exported.stderr
    assert "1 passed" in not_exported.stdout, not_exported.stdout + not_exported.stderr
    assert "1 passed" in no_plugin.stdout, no_plugin.stdout + no_plugin.stderr
    # pytest itself warns of the unmocked_* keys it no longer knows; unmocked says nothing.
    assert "unmocked:" not in no_plugin.stdout + no_plugin.stderr
