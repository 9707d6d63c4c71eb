"""pytest-postgresql's per-test ``postgresql``: a database made from its template for each test.

``postgresql_noproc`` attaches to the benchmark's server and, once per session, creates the
template database ``<dbname>_tmpl`` and runs the migration files into it (its ``load`` list); the
``postgresql`` fixture then creates ``<dbname>`` from that template before each test, connects, and
drops it after.
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
