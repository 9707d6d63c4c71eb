"""A run keeps within its connections (``unmocked_max_connections``, the server's limit) and, when
none is free, waits for one, then fails its test in one line naming the limit and who holds them.

Against a PostgreSQL 15 cluster of this module's own, with max_connections = 20, that nothing
else uses: what a run holds is what pg_stat_activity shows.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from helpers import outcomes
from unmocked import connection_budget
from unmocked.servers import RunningServer

OTHER_RUN = "unmocked abcdef0123 999 ci@runner-9"


@pytest.fixture
def project(
    pytester: pytest.Pytester, pg15_cluster: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    for name in ("UNMOCKED_PROVIDER", "UNMOCKED_PG_VERSION", "UNMOCKED_MIGRATIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UNMOCKED_DATABASE_URL", pg15_cluster.server.url)
    monkeypatch.setenv("OTHER_URL", pg15_cluster.server.url)
    return pytester


class Observer:
    """The most client sessions seen on the server at once, besides its own, while it runs."""

    def __init__(self, url: str) -> None:
        self.most = 0
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Observer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ).fetchone()
                self.most = max(self.most, int(row[0]) if row else 0)
                time.sleep(0.005)


HOLDING_SUITE = """
import time

import psycopg
import pytest

@pytest.mark.parametrize("n", range(10))
def test_holds_a_connection_a_while(pg_url, n):
    with psycopg.connect(pg_url):
        time.sleep(0.3)
"""


def test_a_run_and_its_xdist_workers_together_hold_no_more_than_unmocked_max_connections(
    project: pytest.Pytester, pg15_cluster: RunningServer, tmp_path: Path
) -> None:
    # Two workers' admin sessions (each holding its lease) are 2: a test's connection and a
    # reset's are left, so the workers take turns.
    project.makeini("[pytest]\nunmocked_max_connections = 4\nunmocked_connection_wait = 30\n")
    project.makepyfile(test_holding=HOLDING_SUITE)
    report = tmp_path / "report.xml"

    with Observer(pg15_cluster.server.url) as observer:
        result = project.runpytest_subprocess(
            "-n", "2", "-p", "no:randomly", f"--junitxml={report}"
        )

    assert observer.most <= 4, result.stdout.str()
    assert observer.most >= 3  # the workers did meet the limit
    assert [kind for kind, _ in outcomes(report).values()] == ["passed"] * 10, result.stdout.str()


FULL_SERVER_SUITE = f"""
import os
import threading

import psycopg

held = []

def test_others_take_every_slot(pg):
    while True:
        try:
            held.append(psycopg.connect(os.environ["OTHER_URL"], application_name="{OTHER_RUN}"))
        except psycopg.OperationalError:
            break
    assert held

def test_finds_no_connection_free(pg_url):
    pass

def test_others_give_theirs_back_within_a_second():
    threading.Timer(1.0, lambda: [conn.close() for conn in held]).start()

def test_waits_for_one_to_come_free(pg_url):
    psycopg.connect(pg_url).close()
"""


def test_a_run_facing_a_full_server_waits_then_fails_in_one_line_naming_the_holders(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    project.makeini("[pytest]\nunmocked_connection_wait = 4\n")
    project.makepyfile(test_full=FULL_SERVER_SUITE)
    report = tmp_path / "report.xml"

    started = time.monotonic()
    result = project.runpytest_subprocess("-p", "no:randomly", f"--junitxml={report}")
    took = time.monotonic() - started

    output = result.stdout.str()
    found = outcomes(report)
    assert found["test_others_take_every_slot"][0] == "passed"
    kind, message = found["test_finds_no_connection_free"]
    assert kind == "error"
    assert (
        "no connection free for test_full.py::test_finds_no_connection_free after 4 s: all 20 "
        "connections the server allows are in use (max_connections 20); held by pid 999 on "
        "runner-9 (ci) "
    ) in message, message
    assert "\n" not in message
    assert found["test_waits_for_one_to_come_free"][0] == "passed", found
    assert "INTERNALERROR" not in output and "Traceback" not in output
    assert took < 60


def test_the_limit_of_a_role_that_is_not_superuser_leaves_the_reserved_slots_out(
    pg15_cluster: RunningServer,
) -> None:
    url = pg15_cluster.server.url
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE ROLE unmocked_budget_plain LOGIN PASSWORD 'plain'")
        try:
            plain_url = make_conninfo(url, user="unmocked_budget_plain", password="plain")
            with psycopg.connect(plain_url, autocommit=True) as plain:
                limit = connection_budget.server_limit(plain)
            with psycopg.connect(url, autocommit=True) as superuser:
                as_superuser = connection_budget.server_limit(superuser)
        finally:
            admin.execute("DROP ROLE unmocked_budget_plain")

    assert (limit.slots, limit.words) == (17, "max_connections 20 minus 3 reserved for superusers")
    assert (as_superuser.slots, as_superuser.words) == (20, "max_connections 20")


def test_a_run_that_cannot_even_connect_tries_again_then_fails_its_tests_in_one_line(
    project: pytest.Pytester, pg15_cluster: RunningServer, tmp_path: Path
) -> None:
    project.makeini("[pytest]\nunmocked_connection_wait = 2\n")
    project.makepyfile(test_any="def test_needs_a_database(pg):\n    pass\n")
    report = tmp_path / "report.xml"
    held = []
    try:
        while True:
            try:
                held.append(psycopg.connect(pg15_cluster.server.url, application_name=OTHER_RUN))
            except psycopg.OperationalError:
                break
        result = project.runpytest_subprocess("-p", "no:randomly", f"--junitxml={report}")
    finally:
        for conn in held:
            conn.close()

    output = result.stdout.str()
    kind, message = outcomes(report)["test_needs_a_database"]
    assert kind in ("error", "failure"), output
    assert "has no connection free after 2 s: the server refuses new connections" in message
    assert "INTERNALERROR" not in output and "Traceback" not in output
