"""PostGIS for real, through the machine's binaries: a project whose migrations create the
extension and a ``geography`` column with a GiST index gets it in the template, built once; its
tests insert points and ask ``ST_DWithin`` through ``pg`` and ``pg_url``, and ``queries.indexed()``
sees the GiST index serve that filter (and no index serve ``ST_Distance(...) < d``). Under
``auto``, ``unmocked_extensions = postgis`` moves the run to the machine's PostgreSQL and the
header says why.

PostGIS is Debian's ``postgresql-<major>-postgis-3`` package (.ci/run installs it); no pip wheel
has it. Where no local major has it, the tests skip with that reason.
"""

from __future__ import annotations

import pytest

from helpers import first_local_with, write_files
from unmocked.servers.extensions import Installation, installations

MIGRATION = """
CREATE EXTENSION IF NOT EXISTS postgis;
"""
PLACES = """
CREATE TABLE places (
  id serial PRIMARY KEY,
  name text NOT NULL,
  location geography(Point, 4326) NOT NULL
);
CREATE INDEX places_location ON places USING gist (location);
"""
# The points are lon/lat; Versailles is 17 km from Paris, Lyon 390 km.
SUITE = """
import psycopg

PLACES = [("Paris", 2.3522, 48.8566), ("Versailles", 2.1301, 48.8049), ("Lyon", 4.8357, 45.7640)]
NEAR_PARIS = (
    "SELECT name FROM places "
    "WHERE ST_DWithin(location, ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography, %s) "
    "ORDER BY name"
)

def insert(conn):
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO places (name, location) "
            "VALUES (%s, ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography)",
            PLACES,
        )

def test_postgis_is_in_the_template(pg):
    version = pg.execute("SELECT postgis_lib_version()").fetchone()[0]
    assert version.startswith("3.")

def test_st_dwithin_through_pg(pg):
    insert(pg)
    rows = pg.execute(NEAR_PARIS, (2.3522, 48.8566, 20_000)).fetchall()
    assert rows == [("Paris",), ("Versailles",)]

def test_st_dwithin_through_pg_url(pg_url):
    with psycopg.connect(pg_url) as conn:
        insert(conn)
        conn.commit()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(NEAR_PARIS, (4.8357, 45.7640, 1_000)).fetchall()
        metres = conn.execute(
            "SELECT ST_Distance(a.location, b.location) FROM places a, places b "
            "WHERE a.name = 'Paris' AND b.name = 'Lyon'"
        ).fetchone()[0]
    assert rows == [("Lyon",)]
    assert 390_000 < metres < 395_000

def test_each_test_starts_from_the_template(pg):
    assert pg.execute("SELECT count(*) FROM places").fetchone() == (0,)

def test_the_gist_index_serves_st_dwithin(pg, queries):
    insert(pg)
    with queries.indexed(tables=["places"]):
        pg.execute(NEAR_PARIS, (2.3522, 48.8566, 20_000)).fetchall()
    assert "places_location" in str(queries.explain(NEAR_PARIS, (2.3522, 48.8566, 20_000)))

def test_no_index_serves_a_distance_compared(pg, queries):
    with queries.indexed(tables=["places"]):
        pg.execute(
            "SELECT name FROM places WHERE ST_Distance(location, "
            "ST_SetSRID(ST_MakePoint(2.35, 48.86), 4326)::geography) < 20000"
        ).fetchall()
"""


def machine_with_postgis() -> Installation:
    """The newest of the machine's PostgreSQL majors with PostGIS; skips where there is none."""
    found = first_local_with(["postgis"])
    if found is None:
        majors = [inst.major for inst in installations() if inst.provider == "local"]
        on = f"for PostgreSQL {', '.join(map(str, majors))}" if majors else "(no local PostgreSQL)"
        pytest.skip(f"PostGIS is not installed {on}: apt-get install postgresql-<major>-postgis-3")
    return found


def test_postgis_through_the_local_provider(default_provider: pytest.Pytester) -> None:
    machine = machine_with_postgis()
    write_files(
        default_provider.path,
        {
            "pytest.ini": (
                "[pytest]\nunmocked_provider = local\n"
                f"unmocked_pg_version = {machine.major}\nunmocked_migrations = migrations\n"
                "asyncio_default_fixture_loop_scope = function\n"
            ),
            "migrations/001_postgis.sql": MIGRATION,
            "migrations/002_places.sql": PLACES,
            "test_places.py": SUITE,
        },
    )

    result = default_provider.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines([f"unmocked: PostgreSQL {machine.major}.* (local, *"])
    output = result.stdout.str()
    assert "FAILED test_places.py::test_no_index_serves_a_distance_compared" in output
    assert "1 statement must read a whole table (of places)" in output, output


def test_auto_with_unmocked_extensions_postgis_starts_the_machines_postgresql_saying_why(
    default_provider: pytest.Pytester,
) -> None:
    machine = machine_with_postgis()
    wheel = next((inst for inst in installations() if inst.provider == "embedded"), None)
    if wheel is None or not wheel.lacks(["postgis"]):
        pytest.skip("needs the embedded wheel, without PostGIS, for auto to move from")
    write_files(
        default_provider.path,
        {
            "pytest.ini": (
                "[pytest]\nunmocked_extensions = postgis\nunmocked_migrations = migrations\n"
                "asyncio_default_fixture_loop_scope = function\n"
            ),
            "migrations/001_places.sql": PLACES,
            "test_places.py": f"""
                def test_server(pg_server, pg):
                    assert (pg_server.provider, pg_server.major) == ("local", {machine.major})
                    assert pg.execute("SELECT count(*) FROM places").fetchone() == (0,)
                """,
        },
    )

    result = default_provider.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"unmocked: PostgreSQL {machine.major}.* (local, *",
            f"unmocked: postgis is not in {wheel.describe(where=False)}: using "
            f"{machine.describe()}",
        ]
    )
