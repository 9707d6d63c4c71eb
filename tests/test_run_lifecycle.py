"""What a whole run does with its server and template: reuse across runs, clean failures, no
orphans even when the run is killed, and a server that never runs as root."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import PYTEST_COMMAND, wait_until_gone


def test_template_is_built_once_and_reused_by_the_next_run(user_project: pytest.Pytester) -> None:
    user_project.makepyfile("def test_schema(pg):\n    pg.execute('SELECT count(*) FROM users')\n")
    (user_project.path / "migrations" / "002_unique_to_this_test.sql").write_text(
        f"-- {user_project.path}\nCREATE TABLE notes (id int);\n"
    )
    first = user_project.runpytest()
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["unmocked: PostgreSQL *, template * built in *"])
    second = user_project.runpytest()
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["unmocked: PostgreSQL *, template * reused*"])


def test_one_header_line_says_what_is_ready_before_the_first_test_runs(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile("def test_schema(pg):\n    pg.execute('SELECT 1')\n")
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "unmocked: PostgreSQL *, template *, ready in *.* s",
            "test_one_header_line_says_what_is_ready_before_the_first_test_runs.py .*",
            "unmocked: PostgreSQL *, template *, 1 rollback test, database time *",
        ]
    )
    # Under xdist the controller starts the server once a worker's collection asks for it; the
    # workers build the template, so its header names the server only.
    spread = user_project.runpytest_subprocess("-n", "2")
    spread.assert_outcomes(passed=1)
    spread.stdout.fnmatch_lines(["unmocked: PostgreSQL *, ready in *.* s"])


def test_the_summary_counts_in_the_singular_and_the_plural(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        "def test_one(pg):\n    pass\n\n"
        "def test_two(pg):\n    pass\n\n"
        "def test_fresh(pg_url):\n    pass\n"
    )
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["unmocked: *, 2 rollback tests, 1 fresh database (*), *"])


def test_verbose_runs_say_where_the_start_up_time_went(user_project: pytest.Pytester) -> None:
    user_project.makepyfile("def test_schema(pg):\n    pass\n")
    migrations = user_project.path / "migrations"
    (migrations / "002_unique_to_this_test.sql").write_text(f"-- {user_project.path}\n")
    verbose = user_project.runpytest("-v")
    verbose.assert_outcomes(passed=1)
    started = "" if os.environ["UNMOCKED_PROVIDER"] == "url" else "*start *.* s, "
    verbose.stdout.fnmatch_lines([f"unmocked: {started}*migrate *.* s*"])

    (migrations / "003_a_new_template.sql").write_text("CREATE TABLE notes (id int);\n")
    quiet = user_project.runpytest()
    quiet.assert_outcomes(passed=1)
    assert "migrate " not in quiet.stdout.str()


def test_a_run_whose_tests_need_no_database_starts_no_server(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile("def test_plain():\n    assert 1 + 1 == 2\n")
    result = user_project.runpytest("-v")
    result.assert_outcomes(passed=1)
    assert "unmocked:" not in result.stdout.str()


def test_failed_migration_names_file_line_and_message_and_caches_nothing(
    user_project: pytest.Pytester,
) -> None:
    (user_project.path / "migrations" / "002_broken.sql").write_text(
        "-- adds amounts\n"
        "CREATE TABLE payments (\n"
        "  id serial PRIMARY KEY,\n"
        "  amount numeric NOT NULL DEFAULT,\n"
        "  paid_at timestamptz\n"
        ");\n"
    )
    user_project.makepyfile("def test_uses_db(pg):\n    pass\n")
    result = user_project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            'migrations/002_broken.sql, line 4: syntax error at or near ","'
            " (PostgreSQL). Fix the file and run again; nothing was cached."
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "unmocked/templates.py" not in result.stdout.str()

    (user_project.path / "migrations" / "002_broken.sql").write_text(
        "CREATE TABLE payments (id serial PRIMARY KEY, amount numeric NOT NULL);\n"
    )
    user_project.runpytest().assert_outcomes(passed=1)


def test_pg_server_describes_the_running_server(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        """
        import os
        import psycopg

        def test_server(pg_server):
            assert pg_server.provider == os.environ["UNMOCKED_PROVIDER"]
            assert pg_server.major >= 13
            with psycopg.connect(pg_server.url) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
            assert version.startswith(pg_server.version)
            if pg_server.provider != "url":
                assert pg_server.owned and pg_server.data_dir.is_dir()
                postmaster_pid = int((pg_server.data_dir / "postmaster.pid").read_text().split()[0])
                assert os.stat(f"/proc/{postmaster_pid}").st_uid != 0
        """
    )
    user_project.runpytest().assert_outcomes(passed=1)


KILLED_SUITE = """
import os, time

def test_waits_to_be_killed(pg_server):
    pid = int((pg_server.data_dir / "postmaster.pid").read_text().split()[0])
    with open(os.environ["PID_FILE"], "w") as out:
        out.write(str(pid))
    time.sleep(120)
"""


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["plain", "xdist"])
def test_no_postgres_process_outlives_a_run_killed_with_sigkill(
    user_project: pytest.Pytester,
    provider: dict[str, str],
    tmp_path: Path,
    workers: list[str],
) -> None:
    if provider["UNMOCKED_PROVIDER"] == "url":
        pytest.skip("a server given by URL is not ours to stop")
    pid_file = tmp_path / "postmaster.pid"
    user_project.makepyfile(test_killed=KILLED_SUITE)
    env = dict(os.environ, PID_FILE=str(pid_file))
    run = subprocess.Popen(
        [*PYTEST_COMMAND, "-q", "-p", "no:randomly", *workers],
        cwd=user_project.path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert run.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    postmaster = int(pid_file.read_text())
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert wait_until_gone(postmaster, 20), "postgres outlived the killed pytest run"
