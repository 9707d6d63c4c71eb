"""``unmocked status`` and ``unmocked gc`` on a server given by URL that many runs share: the runs
alive and what they hold, what gc would drop, and what gc kept and why.

On a PostgreSQL 15 cluster of this module's own, so that gc here drops nobody else's databases.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from helpers import run_unmocked
from unmocked import ownership
from unmocked.ownership import Owner
from unmocked.servers import RunningServer
from unmocked.session import UnmockedSession
from unmocked.settings import Settings

DEAD_RUN = "0123456789"


@pytest.fixture
def live_run(pg15_cluster: RunningServer) -> Iterator[UnmockedSession]:
    """A run alive on the shared server, with a rollback database and a connection to it; and a
    database a dead run left."""
    session = UnmockedSession(Settings(database_url=pg15_cluster.server.url))
    with session, session.rolled_back("tests/test_a.py::test_b"):
        ownership.create_database(
            session.admin,
            ownership.run_database_name(DEAD_RUN, "fresh", 1),
            Owner("fresh", run=DEAD_RUN),
            "template0",
            None,
        )
        yield session


def command_env(url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNMOCKED_")}
    return {**env, "UNMOCKED_DATABASE_URL": url, "UNMOCKED_CACHE_DIR": str(tmp_path)}


def test_status_lists_the_runs_alive_what_gc_would_drop_the_templates_and_the_connections(
    pg15_cluster: RunningServer, live_run: UnmockedSession, tmp_path: Path
) -> None:
    with psycopg.connect(pg15_cluster.server.url, application_name="someone else"):
        result = run_unmocked("status", env=command_env(pg15_cluster.server.url, tmp_path))

    assert result.returncode == 0, result.stderr
    out = result.stdout
    host = socket.gethostname().split(".")[0]
    run_row = next(line for line in out.splitlines() if line.strip().startswith(live_run.run_id))
    assert run_row.split()[:3] == [live_run.run_id, host, str(os.getpid())]
    assert f"unmocked_{live_run.run_id}_rollback_1  rollback" in out
    assert "databases of runs no longer alive (gc drops them): 1" in out
    assert f"unmocked_{DEAD_RUN}_fresh_1" in out
    assert "templates: 1" in out and "yes" in out.split("templates: 1", 1)[1]  # held by the run
    assert "of 20 in use (max_connections 20)" in out and "1 other(s)" in out
    password = psycopg.conninfo.conninfo_to_dict(pg15_cluster.server.url).get("password")
    assert not password or str(password) not in out


def test_gc_drops_the_dead_runs_database_and_says_what_it_kept_and_why(
    pg15_cluster: RunningServer, live_run: UnmockedSession, tmp_path: Path
) -> None:
    result = run_unmocked("gc", env=command_env(pg15_cluster.server.url, tmp_path))

    assert result.returncode == 0, result.stderr
    out = result.stdout
    host = socket.gethostname().split(".")[0]
    assert f"dropped unmocked_{DEAD_RUN}_fresh_1: fresh database of run {DEAD_RUN}" in out
    assert (
        f"kept unmocked_{live_run.run_id}_rollback_1: run {live_run.run_id} "
        f"(pid {os.getpid()} on {host}, "
    ) in out
    assert "template among the 20 most recently used, used " in out


def test_gc_keeps_a_dead_runs_database_a_session_is_still_connected_to(
    pg15_cluster: RunningServer, live_run: UnmockedSession, tmp_path: Path
) -> None:
    name = ownership.run_database_name(DEAD_RUN, "fresh", 1)
    inside = psycopg.conninfo.make_conninfo(
        pg15_cluster.server.url, dbname=name, application_name="a leftover"
    )
    with psycopg.connect(inside):
        result = run_unmocked("gc", env=command_env(pg15_cluster.server.url, tmp_path))

    assert (
        f"kept {name}: its run is no longer alive, but 1 session(s) are connected to it "
        "(a leftover)"
    ) in result.stdout
    ownership.drop_database(live_run.admin, name)
