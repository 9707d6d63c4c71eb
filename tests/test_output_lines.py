"""Every line unmocked prints is true and earns its place: none in a suite that asks for no
database, the server named as what it is inside ``unmocked run``, phase counts that agree with
the summary, and the account PostgreSQL runs as said once per machine and in ``-v``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from helpers import (
    PYTEST_COMMAND,
    UNMOCKED_COMMAND,
    as_root,
    embedded_env,
    needs_embedded,
    run_pytest,
    run_unmocked,
    write_files,
)

pytestmark = needs_embedded

PLAIN_INI = "[pytest]\naddopts = -p no:randomly -p no:django\n"

NO_DATABASE_TESTS = """
def test_one():
    assert 1

def test_two():
    assert 2
"""

DATABASE_TESTS = """
import pytest

@pytest.mark.parametrize("n", range(3))
def test_fresh(pg_url, n):
    import psycopg
    with psycopg.connect(pg_url) as conn:
        conn.execute("SELECT 1")

def test_rollback(pg):
    pg.execute("SELECT 1")
"""

# A Django project whose tests never touch its database: the integration is on, nothing asks.
DJANGO_FILES = {
    "pytest.ini": (
        "[pytest]\nDJANGO_SETTINGS_MODULE = proj.settings\npythonpath = .\n"
        "addopts = -p no:randomly\n"
    ),
    "proj/__init__.py": "",
    "proj/settings.py": """
        SECRET_KEY = "test-only"
        INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
        USE_TZ = True
        DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "app",
                                 "HOST": "127.0.0.1", "PORT": 1, "USER": "app"}}
    """,
    "test_simple.py": """
        from django.test import SimpleTestCase

        class Arithmetic(SimpleTestCase):
            def test_sum(self):
                assert 1 + 1 == 2

        def test_plain():
            assert True
    """,
}


def unmocked_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("unmocked:")]


@pytest.mark.parametrize(
    "how", ["serial", "xdist", "unmocked-run", "unmocked-run-xdist", "django", "django-xdist"]
)
def test_a_suite_that_asks_for_no_database_prints_no_line_of_unmockeds(
    tmp_path: Path, unmocked_cache: Path, how: str
) -> None:
    if how.startswith("django"):
        project = write_files(tmp_path, DJANGO_FILES)
    else:
        project = write_files(
            tmp_path, {"pytest.ini": PLAIN_INI, "test_plain.py": NO_DATABASE_TESTS}
        )
    env = embedded_env(unmocked_cache)
    pytest_args = ["-q", *(["-n", "2"] if how.endswith("xdist") else [])]
    if how.startswith("unmocked-run"):
        result = run_unmocked("run", "--", *PYTEST_COMMAND, *pytest_args, cwd=project, env=env)
    else:
        result = run_pytest(*pytest_args, cwd=project, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert unmocked_lines(result.stdout) == []


def test_inside_unmocked_run_the_server_is_named_as_what_it_is(
    tmp_path: Path, unmocked_cache: Path
) -> None:
    same_server = (
        "import os\n"
        "from urllib.parse import urlsplit\n"
        "def test_the_runs_own_server(pg_server):\n"
        "    assert urlsplit(pg_server.url).port == int(os.environ['PGPORT'])\n"
    )
    project = write_files(
        tmp_path,
        {"pytest.ini": PLAIN_INI, "test_db.py": DATABASE_TESTS, "test_same.py": same_server},
    )
    env = embedded_env(unmocked_cache)

    result = run_unmocked("run", "--", *PYTEST_COMMAND, "-q", cwd=project, env=env)
    # unmocked run inside unmocked run: the inner one uses the outer one's server, and says so.
    nested = run_unmocked(
        "run", "--", *UNMOCKED_COMMAND, "run", "--", sys.executable, "-c", "pass", env=env
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
    lines = unmocked_lines(result.stdout)
    assert len(lines) == 2, lines  # the header and the summary
    assert all("(embedded, " in line and "(url)" not in line for line in lines), lines
    assert nested.returncode == 0, nested.stderr
    servers = re.findall(r"unmocked run: (PostgreSQL .*?), database ", nested.stderr)
    assert len(servers) == 2 and servers[0] == servers[1], nested.stderr
    assert "(embedded, " in servers[0]


def test_the_phases_line_counts_what_the_summary_counts(
    tmp_path: Path, unmocked_cache: Path
) -> None:
    project = write_files(tmp_path, {"pytest.ini": PLAIN_INI, "test_db.py": DATABASE_TESTS})

    result = run_pytest("-v", cwd=project, env=embedded_env(unmocked_cache))

    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"3 fresh databases \((\d+) reset, (\d+) cloned\)", result.stdout)
    assert summary is not None, result.stdout
    phases = next(
        line
        for line in unmocked_lines(result.stdout)
        if re.search(r"\bclone\b", line) and "PostgreSQL" not in line
    )
    # Phases are named for what happened: the end of every pg_url test is not a reset, so a
    # phase named reset counts no more than the databases the summary says were reset.
    reset = re.search(r"\breset (?:(\d+)x )?[\d.]+ s", phases)
    resets = 0 if reset is None else int(reset.group(1) or 1)
    assert resets <= int(summary.group(1)), (summary.group(0), phases)


@as_root
def test_the_account_postgresql_runs_as_is_said_in_verbose_runs_only(
    tmp_path: Path, unmocked_cache: Path
) -> None:
    from unmocked.servers._as_root import service_account

    account = service_account()  # made now if this machine has none yet: that run says it
    assert account is not None
    project = write_files(tmp_path, {"pytest.ini": PLAIN_INI, "test_db.py": DATABASE_TESTS})
    env = embedded_env(unmocked_cache)

    quiet = run_pytest("-q", cwd=project, env=env)
    verbose = run_pytest("-v", cwd=project, env=env)

    assert quiet.returncode == verbose.returncode == 0, quiet.stdout + verbose.stdout
    assert "runs as user" not in quiet.stdout + quiet.stderr
    assert "running PostgreSQL as" not in quiet.stdout + quiet.stderr
    said = f"unmocked: PostgreSQL runs as user {account.name!r}, because it refuses to run as root"
    assert said in unmocked_lines(verbose.stdout)
