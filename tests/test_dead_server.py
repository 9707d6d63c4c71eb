"""A server that dies mid-run is one clear paragraph, and every later test fails fast in one line.

The paragraph says what died, shows the last lines of its log and what to do; it does not blame a
migration when the server died during the template's build. A server given by URL is not unmocked's
to kill (nor to watch): those runs are skipped.
"""

from __future__ import annotations

import re

import pytest

KILLS_THE_SERVER = """
import os
import signal
import time

import psycopg


def kill_the_postmaster(pg_server):
    pid = int((pg_server.data_dir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until gone, or a zombie its parent did not reap yet
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.01)


def test_1_kills_the_server(pg, pg_server):
    pg.execute("INSERT INTO users (email) VALUES ('a@example.com')")
    kill_the_postmaster(pg_server)


def test_2_pg(pg):
    pg.execute("SELECT 1")


def test_3_pg_url(pg_url):
    with psycopg.connect(pg_url) as conn:
        conn.execute("SELECT 1")


def test_4_sa_session(sa_session):
    pass


def test_5_pg_again(pg):
    pass
"""


@pytest.fixture
def own_server(provider: dict[str, str]) -> dict[str, str]:
    if provider["UNMOCKED_PROVIDER"] == "url":
        pytest.skip("a server given by URL is not unmocked's to kill, nor to watch")
    return provider


def test_a_killed_server_is_one_paragraph_and_every_later_test_one_line(
    user_project: pytest.Pytester, own_server: dict[str, str]
) -> None:
    user_project.makepyfile(test_kills=KILLS_THE_SERVER)
    result = user_project.runpytest_subprocess("-p", "no:randomly")
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    lines = output.splitlines()
    assert len(lines) < 150, output
    result.assert_outcomes(passed=1, errors=5)  # test 1 passes, then errors at teardown
    paragraph = re.search(
        r"The PostgreSQL server of this run died during \S+::test_1_kills_the_server: "
        r".*was killed by SIGKILL\. Last lines of its log, (\S+):",
        output,
    )
    assert paragraph, output
    assert paragraph[1].endswith("server.log")
    errors = output.split("= ERRORS =")[1].split("short test summary info")[0]
    one_line = (
        "The PostgreSQL server of this run died during test_kills.py::test_1_kills_the_server "
        "(that error says how, and where its log is): this test needs a database, so it fails "
        "at once."
    )
    for test in ("test_2_pg", "test_3_pg_url", "test_4_sa_session", "test_5_pg_again"):
        assert f"ERROR at setup of {test} _\n{one_line}\n" in re.sub("_{2,}", "_", errors)
    assert errors.count("Last lines of its log") == 1, errors


def test_a_server_killed_during_the_build_is_blamed_not_the_migration(
    user_project: pytest.Pytester, own_server: dict[str, str]
) -> None:
    # A migration that kills the server: COPY ... TO PROGRAM runs in the data folder.
    (user_project.path / "migrations" / "002_kills_the_server.sql").write_text(
        "CREATE TABLE notes (id int);\n"
        "COPY (SELECT 1) TO PROGRAM 'kill -9 $(head -1 postmaster.pid)';\n"
        "CREATE TABLE later (id int);\n"
    )
    user_project.makepyfile(
        "def test_a(pg):\n    pass\n\ndef test_b(pg_url):\n    pass\n\ndef test_c(pg):\n    pass\n"
    )
    result = user_project.runpytest_subprocess("-p", "no:randomly")
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    assert "Fix the file" not in output, output
    result.assert_outcomes(errors=3)
    errors = output.split("= ERRORS =")[1].split("short test summary info")[0]
    assert errors.count("died during the template's build") == 3, errors  # 1 paragraph, 2 lines
    assert errors.count("Last lines of its log") == 1, errors
    assert re.search(r"Last lines of its log, \S+server\.log", errors), errors
    assert len(output.splitlines()) < 100, output
