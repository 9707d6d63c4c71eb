"""``unmocked_role``: the tests' sessions run as the application's role, as in production.

Each guarantee is tried the way a suite would break it: a GRANT the role lacks must fail as it
fails in production, a row-level-security policy must hide other tenants' rows, ``RESET ROLE`` must
not give the superuser back, every path (``pg``, ``sa_session``, ``apg``, asyncpg, ``pg_url``) must
run as the role, the run's login role must be gone afterwards (also when a failed test's kept
database holds a table it created, and when the run was killed), and a role the migrations did
not create must stop the run with one paragraph.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import use_migrations
from helpers import (
    DJANGO_BASE_SETTINGS,
    ONE_PROVIDER,
    RUNNING_SERVER_URL,
    UNMOCKED_COMMAND,
    query,
    write_files,
)

# Roles belong to the whole server, and the template may be built again: created only if missing,
# as production's migrations do (two builds at once may race, hence unique_violation).
ROLE = "app_of_unmocked_tests"
SCHEMA = f"""
DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
GRANT SELECT, INSERT ON notes TO {ROLE};  -- and not USAGE on notes_id_seq: the bug
CREATE TABLE documents (id int PRIMARY KEY, tenant int NOT NULL, title text NOT NULL);
INSERT INTO documents VALUES (1, 1, 'ours'), (2, 2, 'theirs');
ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY same_tenant ON documents TO {ROLE}
  USING (tenant = current_setting('app.tenant', true)::int);
GRANT SELECT ON documents TO {ROLE};
GRANT CREATE ON SCHEMA public TO {ROLE};
"""

SUITE = f"""
import json, os
import psycopg
import pytest
from sqlalchemy import text

def note_login(session_user):
    with open(os.environ["LOGINS_FILE"], "a") as file:
        file.write(json.dumps(session_user) + "\\n")

def test_pg_runs_as_the_role_and_reset_role_keeps_it(pg):
    assert pg.execute("SELECT current_user").fetchone()[0] == "{ROLE}"
    pg.execute("RESET ROLE")
    assert pg.execute("SELECT current_user").fetchone()[0] == "{ROLE}"
    pg.execute("SET ROLE NONE")  # the login role unmocked made: no superuser either
    row = pg.execute(
        "SELECT session_user, rolsuper FROM pg_roles WHERE rolname = session_user"
    ).fetchone()
    note_login(row[0])
    assert row[0].startswith("unmocked_") and row[1] is False

def test_a_grant_the_role_lacks_fails_as_in_production(pg):
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="notes_id_seq"):
        pg.execute("INSERT INTO notes (body) VALUES ('x')")

def test_row_level_security_applies(pg):
    pg.execute("SELECT set_config('app.tenant', '1', true)")
    assert pg.execute("SELECT title FROM documents").fetchall() == [("ours",)]

def test_sa_session_runs_as_the_role(sa_session):
    assert sa_session.execute(text("SELECT current_user")).scalar() == "{ROLE}"

@pytest.mark.asyncio
async def test_apg_runs_as_the_role(apg):
    cursor = await apg.execute("SELECT current_user")
    assert (await cursor.fetchone())[0] == "{ROLE}"

@pytest.mark.asyncio
async def test_asyncpg_runs_as_the_role(sa_async_session):
    assert (await sa_async_session.execute(text("SELECT current_user"))).scalar() == "{ROLE}"

def test_pg_url_logs_in_as_a_member_of_the_role(pg_url):
    assert "unmocked_" in pg_url and "***" in repr(pg_url)
    with psycopg.connect(pg_url) as conn:
        user, session_user = conn.execute("SELECT current_user, session_user").fetchone()
        note_login(session_user)
        assert user == "{ROLE}"
        assert conn.execute("SELECT title FROM documents").fetchall() == []  # no tenant set

def test_a_failed_test_keeps_a_table_its_role_made(pg_url):
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE made_by_the_app (id int)")
    assert False, "kept, with a table the login role owns"
"""


@pytest.fixture
def role_project(
    provider_project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    pytest.importorskip("sqlalchemy")
    migrations = provider_project.mkdir("migrations")
    (migrations / "001_schema.sql").write_text(SCHEMA)
    use_migrations(provider_project, "migrations")
    ini = provider_project.path / "tox.ini"
    ini.write_text(ini.read_text().rstrip("\n") + f"\nunmocked_role = {ROLE}\n")
    provider_project.makepyfile(test_role=SUITE)
    monkeypatch.setenv("LOGINS_FILE", str(tmp_path / "logins"))
    return provider_project


def admin_url(provider: dict[str, str]) -> str | None:
    """The server's admin URL, for looking at roles after the run (the embedded server has
    stopped by then: its roles went with it)."""
    return RUNNING_SERVER_URL if provider["UNMOCKED_PROVIDER"] == "url" else None


def test_every_path_runs_as_the_role_and_its_login_is_gone_after(
    role_project: pytest.Pytester, provider: dict[str, str], tmp_path: Path
) -> None:
    result = role_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=7, failed=1)
    assert "FAILED test_role.py::test_a_failed_test_keeps_a_table_its_role_made" in (
        result.stdout.str()
    )
    logins = {json.loads(line) for line in (tmp_path / "logins").read_text().splitlines()}
    assert len(logins) == 1, logins  # one login role for the process, on every path
    url = admin_url(provider)
    if url is not None:
        assert query(url, f"SELECT count(*) FROM pg_roles WHERE rolname = '{logins.pop()}'") == 0


@ONE_PROVIDER
def test_under_xdist_each_worker_runs_as_the_role(
    role_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    result = role_project.runpytest_subprocess("-p", "no:randomly", "-n", "2")
    result.assert_outcomes(passed=7, failed=1)


@ONE_PROVIDER
def test_a_role_the_migrations_did_not_create_stops_the_run_with_one_paragraph(
    role_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    result = role_project.runpytest_subprocess("-o", "unmocked_role=no_such_role_at_all")
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "unmocked_role = 'no_such_role_at_all': no role of that name exists on" in output
    assert "Create it in a migration" in output
    assert "INTERNALERROR" not in output and "Traceback" not in output


@ONE_PROVIDER
def test_a_superuser_role_is_refused(
    role_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    result = role_project.runpytest_subprocess("-o", "unmocked_role=postgres")
    if "no role of that name" in result.stdout.str():
        pytest.skip("this server's superuser is not named postgres")
    assert "is a superuser on" in result.stdout.str()


@pytest.mark.parametrize("provider", ["url"], indirect=True)  # a server that outlives the run
def test_a_killed_runs_login_role_is_collected_by_the_next_run(
    role_project: pytest.Pytester, tmp_path: Path
) -> None:
    role_project.makepyfile(
        test_killed="""
        import os, signal, psycopg
        def test_killed(pg):
            user = pg.execute("SELECT session_user").fetchone()[0]
            open(os.environ["LOGINS_FILE"], "w").write(user)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = dict(os.environ)
    killed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "test_killed.py"],
        cwd=role_project.path,
        env=env,
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL
    login = (tmp_path / "logins").read_text()
    assert query(RUNNING_SERVER_URL, f"SELECT count(*) FROM pg_roles WHERE rolname = '{login}'")
    collected = subprocess.run(
        [*UNMOCKED_COMMAND, "gc"],
        cwd=role_project.path,
        env=env,
        text=True,
        capture_output=True,
    )
    # Gone, by this gc or by a run of another test that started meanwhile (under -n 2 the other
    # worker's runs collect what crashed runs left on this server as well): either is the next run.
    assert (
        query(RUNNING_SERVER_URL, f"SELECT count(*) FROM pg_roles WHERE rolname = '{login}'") == 0
    ), collected.stdout


DJANGO_GRANTS = f"""
from django.db import migrations

class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunSQL('''
        DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ROLE};
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {ROLE};
    ''')]
"""


@ONE_PROVIDER
def test_django_runs_as_the_role(
    provider_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    pytest.importorskip("pytest_django")
    settings = DJANGO_BASE_SETTINGS.replace(
        '"django.contrib.auth"]', '"django.contrib.auth", "grants"]'
    ) + (
        'DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "app", '
        '"PORT": "1"}}\n'
    )
    provider_project.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = proj.settings\npythonpath = .\n"
        f"unmocked_role = {ROLE}\n"
    )
    write_files(
        provider_project.path,
        {
            "proj/__init__.py": "",
            "proj/settings.py": settings,
            "grants/__init__.py": "",
            "grants/migrations/__init__.py": "",
            "grants/migrations/0001_grants.py": DJANGO_GRANTS,
        },
    )
    provider_project.makepyfile(
        f"""
        import pytest
        from django.contrib.auth.models import User
        from django.db import connection

        def current_user():
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_user")
                return cursor.fetchone()[0]

        def test_rollback(db):
            User.objects.create(username="a")
            assert current_user() == "{ROLE}"

        @pytest.mark.django_db(transaction=True)
        def test_transactional():
            User.objects.create(username="b")
            assert current_user() == "{ROLE}"
        """
    )
    result = provider_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)
