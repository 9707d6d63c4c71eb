"""pytest-postgresql's per-test ``postgresql``: a database made from its template for each test.

Its server fixture, once per session, creates the template database ``<dbname>_tmpl`` and runs the
migration files into it (its ``load`` list); the ``postgresql`` fixture then creates ``<dbname>``
from that template before each test, connects, and drops it after. The server fixture is
``postgresql_noproc`` on the benchmark's server, or, when ``BENCH_PG_CTL`` names a ``pg_ctl``,
``postgresql_proc``: a cluster of its own, initialised and started by that ``pg_ctl`` in the
session's temporary folder, as pytest-postgresql does by default (the start-up benchmark).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from bench_work import database_round_trip
from pytest_postgresql import factories

# The same files, in the same order, as unmocked's template is built from. (The annotation is the
# one ``load`` declares; mypy does not widen list[Path] to it by itself.)
migration_files: list[Callable[..., Any] | str | Path] = [
    *sorted(Path(os.environ["BENCH_MIGRATIONS"]).glob("*.sql"))
]
# Either factory's fixture; pytest looks only at the name.
postgresql_benchmark_server: Callable[..., Any]
if "BENCH_PG_CTL" in os.environ:
    postgresql_benchmark_server = factories.postgresql_proc(
        executable=os.environ["BENCH_PG_CTL"],
        port=None,
        unixsocketdir=os.environ["BENCH_SOCKET_DIR"],
        load=migration_files,
    )
else:
    postgresql_benchmark_server = factories.postgresql_noproc(
        host=os.environ["BENCH_PG_HOST"],
        port=os.environ["BENCH_PG_PORT"],
        user=os.environ["BENCH_PG_USER"],
        password=os.environ.get("BENCH_PG_PASSWORD") or None,
        dbname=os.environ["BENCH_PPG_DBNAME"],
        maintenance_dbname=os.environ["BENCH_PG_MAINTENANCE_DB"],
        load=migration_files,
    )
postgresql = factories.postgresql("postgresql_benchmark_server")


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_round_trip(postgresql: psycopg.Connection[tuple[object, ...]], number: int) -> None:
    database_round_trip(postgresql, number)
