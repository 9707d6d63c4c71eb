"""Under pytest-xdist every worker gets databases of its own from one template, built once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

COUNTING_MIGRATION = """
import os
import psycopg

def build(url):
    with open(os.environ["BUILD_LOG"], "a") as log:
        log.write("built\\n")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, owner text NOT NULL)")
"""

WORKER_SUITE = """
import os
import pytest

@pytest.mark.parametrize("n", range(12))
def test_rollback(pg, n):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    pg.execute("INSERT INTO items (owner) VALUES (%s)", (worker,))
    pg.commit()
    assert pg.execute("SELECT count(*) FROM items").fetchone()[0] == 1
    with open(os.environ["DB_LOG"], "a") as log:
        db = pg.execute("SELECT current_database()").fetchone()[0]
        log.write(f"{worker} {db}\\n")

@pytest.mark.parametrize("n", range(4))
def test_fresh(pg_url, n):
    import psycopg
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 0
"""


def test_two_workers_share_one_template_and_never_a_database(
    user_project: pytest.Pytester,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    set_migrations: Callable[[str], None],
) -> None:
    build_log, db_log = tmp_path / "build.log", tmp_path / "db.log"
    monkeypatch.setenv("BUILD_LOG", str(build_log))
    monkeypatch.setenv("DB_LOG", str(db_log))
    # A fingerprint of its own for each provider run, so the build really happens here.
    user_project.makepyfile(
        schema=COUNTING_MIGRATION + f"\n# {tmp_path}\n", test_workers=WORKER_SUITE
    )
    set_migrations("schema:build")
    result = user_project.runpytest_subprocess("-n", "2", "-p", "randomly")
    result.assert_outcomes(passed=16)
    assert build_log.read_text().count("built") == 1
    databases_by_worker: dict[str, set[str]] = {}
    for line in db_log.read_text().splitlines():
        worker, database = line.split()
        databases_by_worker.setdefault(worker, set()).add(database)
    assert set(databases_by_worker) == {"gw0", "gw1"}
    assert not databases_by_worker["gw0"] & databases_by_worker["gw1"]
