"""``UNMOCKED_DATABASE_URL`` in any form libpq reads names one server everywhere, or is refused at
once: a ``key=value`` DSN and a URL that leaves parts to libpq's variables work for ``pg``,
``pg_url`` and ``unmocked run`` alike, and whatever is not a PostgreSQL URL stops the run before
anything is built, in one line that names the variable and hides the password.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from helpers import RUNNING_SERVER_URL, run_unmocked, server_answers
from unmocked.export.variables import database_variables
from unmocked.urls import libpq_params, server_url

SOCKET_FOLDER = "/var/run/postgresql"
RUNNING_SERVER_PARTS = tuple(
    str(conninfo_to_dict(RUNNING_SERVER_URL).get(key) or default)
    for key, default in (("host", "127.0.0.1"), ("port", "5432"), ("user", "postgres"))
)

# What the suite and the command under ``unmocked run`` compare: the server (by its system
# identifier, which no other cluster shares), its port, and the database they were given.
WHERE_AM_I = (
    "SELECT system_identifier::text, current_setting('port'), current_database() "
    "FROM pg_control_system()"
)

SUITE = f"""
import os
import psycopg
import pytest

WHERE_AM_I = {WHERE_AM_I!r}

def test_rollback_connection(pg):
    system, _port, _database = pg.execute(WHERE_AM_I).fetchone()
    assert system == os.environ["EXPECTED_SYSTEM"]
    assert pg.execute("SELECT count(*) FROM users").fetchone() == (0,)

def test_sqlalchemy_session(sa_session):
    import sqlalchemy
    assert sa_session.execute(sqlalchemy.text("SELECT count(*) FROM users")).scalar() == 0

def test_fresh_database_url(pg_url):
    with psycopg.connect(pg_url) as conn:
        system, _port, database = conn.execute(WHERE_AM_I).fetchone()
        assert system == os.environ["EXPECTED_SYSTEM"]
        assert psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"] == database
        conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")

def test_fresh_database_url_with_sqlalchemy(pg_url):
    import sqlalchemy
    engine = sqlalchemy.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT count(*) FROM users")).scalar() == 0
    engine.dispose()
"""

# Run by ``unmocked run``: where DATABASE_URL leads, and where the libpq variables lead.
COMMAND = f"""
import os, psycopg
for conninfo in (os.environ["DATABASE_URL"], ""):
    with psycopg.connect(conninfo) as conn:
        print(*conn.execute({WHERE_AM_I!r}).fetchone())
print(os.environ["PGDATABASE"])
"""


@pytest.fixture(scope="module")
def running_system() -> str:
    """The running server's system identifier, which names that one cluster."""
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    with psycopg.connect(RUNNING_SERVER_URL) as conn:
        row = conn.execute(WHERE_AM_I).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def url_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, unmocked_cache: Path
) -> pytest.Pytester:
    """A project with a small schema, on whatever server ``UNMOCKED_DATABASE_URL`` will name,
    in an environment without libpq's variables (each test sets the ones it means)."""
    for name in list(os.environ):
        if name.startswith(("UNMOCKED_", "PG")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("UNMOCKED_CACHE_DIR", str(unmocked_cache))
    (pytester.mkdir("migrations") / "001_users.sql").write_text(
        "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL);\n"
    )
    pytester.makeini(
        "[pytest]\nunmocked_migrations = migrations\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    return pytester


def server_forms() -> list[object]:
    """The running server named as a DSN, by its socket, and by a URL that leaves the host, port
    and user to libpq's variables."""
    host, port, user = RUNNING_SERVER_PARTS
    # The default server trusts local connections: a password is carried along, and ignored.
    password = conninfo_to_dict(RUNNING_SERVER_URL).get("password") or (
        "" if "UNMOCKED_TEST_SERVER_URL" in os.environ else "x"
    )
    dsn = make_conninfo("", host=host, port=port, user=user, password=password, dbname="postgres")
    socket = pytest.mark.skipif(
        not Path(SOCKET_FOLDER, f".s.PGSQL.{port}").exists(),
        reason=f"the running server has no socket in {SOCKET_FOLDER}",
    )
    return [
        pytest.param(dsn, {}, id="dsn"),
        pytest.param(make_conninfo(dsn, host=SOCKET_FOLDER), {}, id="dsn-by-socket", marks=socket),
        pytest.param(
            "postgresql:///postgres" + (f"?password={password}" if password else ""),
            {"PGHOST": host, "PGPORT": port, "PGUSER": user},
            id="url-host-from-pghost",
        ),
    ]


@pytest.mark.parametrize(("given", "libpq_variables"), server_forms())
def test_a_dsn_form_url_is_accepted_everywhere_and_names_the_same_server(
    url_project: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    running_system: str,
    given: str,
    libpq_variables: dict[str, str],
) -> None:
    monkeypatch.setenv("UNMOCKED_DATABASE_URL", given)
    monkeypatch.setenv("EXPECTED_SYSTEM", running_system)
    for name, value in libpq_variables.items():
        monkeypatch.setenv(name, value)
    url_project.makepyfile(test_on_the_server=SUITE)

    suite = url_project.runpytest_subprocess("-p", "no:randomly")
    suite.assert_outcomes(passed=4)

    run = run_unmocked(
        "run", "--", sys.executable, "-c", COMMAND, cwd=url_project.path, env=dict(os.environ)
    )
    assert run.returncode == 0, run.stderr
    by_url, by_variables, exported_database = run.stdout.split("\n")[:3]
    port = RUNNING_SERVER_PARTS[1]
    assert by_url == by_variables == f"{running_system} {port} {exported_database}"


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("http://user:s3cret@example.com/db", "is not a PostgreSQL URL"),
        ("garbage", "is not a PostgreSQL URL"),
        ("postgresql+psycopg://user:s3cret@127.0.0.1/db", "is a SQLAlchemy URL"),
        ("postgresql:///postgres?password=s3cret", "names no host (and PGHOST is not set)"),
        ("user=postgres password=s3cret", "names no host (and PGHOST is not set)"),
    ],
)
@pytest.mark.parametrize("how", ["pytest", "pytest -n 2", "pytest, exported", "unmocked run"])
def test_what_is_not_a_postgresql_url_is_refused_at_once_in_one_line(
    url_project: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    given: str,
    said: str,
    how: str,
) -> None:
    monkeypatch.setenv("UNMOCKED_DATABASE_URL", given)
    ran = tmp_path / "ran"
    url_project.makepyfile(
        test_anything=f"def test_anything(pg):\n    open({str(ran)!r}, 'w').close()\n"
    )

    if how == "unmocked run":
        run = run_unmocked(
            "run", "--", sys.executable, "-c", f"open({str(ran)!r}, 'w').close()",
            cwd=url_project.path, env=dict(os.environ),
        )  # fmt: skip
        status, output = run.returncode, run.stdout + run.stderr
        assert status == 1
    else:
        if how.endswith("exported"):
            monkeypatch.setenv("UNMOCKED_EXPORT_ENV", "true")
        args = ("-n", "2") if how.endswith("-n 2") else ()
        result = url_project.runpytest_subprocess("-p", "no:randomly", *args)
        status, output = result.ret, result.stdout.str() + result.stderr.str()
        assert status == pytest.ExitCode.USAGE_ERROR

    lines = [line for line in output.splitlines() if "UNMOCKED_DATABASE_URL = " in line]
    assert len(lines) == 1, output
    assert said in lines[0]
    assert "s3cret" not in output
    assert "INTERNALERROR" not in output and "Traceback" not in output
    assert "does not answer" not in output
    assert not ran.exists()


@pytest.mark.parametrize(
    "server",
    [
        "host=/run/pg port=5433 user=app password='a b'",
        "host=db.example hostaddr=10.0.0.7 user=app sslmode=require application_name=suite",
        "postgresql://app@[::1]:6543/postgres?connect_timeout=5",
    ],
)
def test_the_exported_variables_say_what_database_url_says(server: str) -> None:
    exported = database_variables(server_url(server, environ={}), "unmocked_x_env_1")

    by_variables = {
        option.keyword.decode(): exported[option.envvar.decode()]
        for option in psycopg.pq.Conninfo.get_defaults()
        if option.envvar and option.envvar.decode() in exported
    }
    assert by_variables == libpq_params(exported["DATABASE_URL"])
    assert by_variables["dbname"] == "unmocked_x_env_1"
