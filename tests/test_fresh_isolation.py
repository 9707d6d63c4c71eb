"""``pg_url`` databases are reused between tests, and still no test sees what another one did.

Each generated suite runs in a fixed order: every test first checks that its database is exactly in
the template's state (rows, sequences, schema, settings, sessions, locks...), then does something a
reset could miss. What one test does, the next one must not see.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from helpers import RUNNING_SERVER_URL, a_role_of_its_own, run_unmocked

ALSO_AS_A_CREATEDB_ROLE = True

SCHEMA = """
CREATE TABLE seeded (
  id int PRIMARY KEY,
  name text NOT NULL,
  shout text GENERATED ALWAYS AS (upper(name)) STORED
);
INSERT INTO seeded (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three');
CREATE TABLE child (id int PRIMARY KEY, seeded_id int REFERENCES seeded ON DELETE CASCADE);
INSERT INTO child VALUES (10, 1), (20, 2);
CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text UNIQUE);
INSERT INTO ident (name) VALUES ('seed');
CREATE SEQUENCE lonely;
CREATE UNLOGGED TABLE cache (k text PRIMARY KEY, v text);
INSERT INTO cache VALUES ('seed', 'v');
CREATE TABLE audit (what text);
CREATE FUNCTION audit_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit VALUES ('user ' || NEW.email);
  RETURN NEW;
END $$;
CREATE TRIGGER users_audit AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION audit_user();
CREATE TABLE events (at int NOT NULL, what text) PARTITION BY RANGE (at);
CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (100);
CREATE TABLE events_high PARTITION OF events FOR VALUES FROM (100) TO (200);
INSERT INTO events VALUES (1, 'seed low'), (150, 'seed high');
"""

# The generated suite: ``state`` is everything a test could see of what an earlier one did.
SUITE_HEAD = '''
import psycopg
import pytest
from psycopg import sql
from unmocked.urls import database_of

PRISTINE = {}
NAMES = []
LEFT_OPEN = []  # connections a test "forgot" to close


def connect(url):
    return psycopg.connect(url, autocommit=True)


def state(url):
    with connect(url) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT oid::regclass::text FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'p') ORDER BY 1")]
        sequences = [row[0] for row in conn.execute(
            "SELECT oid::regclass::text FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind = 'S' ORDER BY 1")]
        found = {
            "rows": {table: sorted(map(repr, conn.execute(f"SELECT * FROM {table}")))
                     for table in tables},
            "sequences": {seq: conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
                          for seq in sequences},
            "columns": conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2").fetchall(),
            "objects": conn.execute(
                "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                "ORDER BY 1").fetchall(),
            "functions": conn.execute(
                "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace "
                "ORDER BY 1").fetchall(),
            "invalid indexes": conn.execute(
                "SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone(),
            "large objects": conn.execute(
                "SELECT count(*) FROM pg_largeobject_metadata").fetchone(),
            "settings": conn.execute(
                "SELECT current_setting('statement_timeout'), current_setting('work_mem')"
            ).fetchone(),
            "temporary tables": conn.execute(
                "SELECT count(*) FROM pg_class WHERE relpersistence = 't'").fetchone(),
            "prepared": conn.execute(
                "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()"
            ).fetchone(),
            "other sessions": conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()").fetchone(),
            "advisory lock free": conn.execute("SELECT pg_try_advisory_lock(42)").fetchone(),
            "database": conn.execute(
                "SELECT datallowconn, datconnlimit, datacl FROM pg_database "
                "WHERE datname = current_database()").fetchone(),
        }
        conn.execute("SELECT pg_advisory_unlock_all()")
    return found


def check(url):
    """The database is in the template's state, under a name no earlier test had."""
    name = database_of(url)
    assert name not in NAMES
    NAMES.append(name)
    if not PRISTINE:
        PRISTINE.update(state(url))
    assert state(url) == PRISTINE
'''

SUITE_TESTS = """
def test_01_rows_inserted_updated_and_deleted(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('new@example.com')")
        conn.execute("UPDATE seeded SET name = 'changed' WHERE id = 1")
        conn.execute("DELETE FROM seeded WHERE id = 3")
        conn.execute("INSERT INTO events VALUES (5, 'low'), (105, 'high')")
        conn.execute("UPDATE cache SET v = 'changed'")


def test_02_sequences_used_without_writing_a_table(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        conn.execute("SELECT nextval('lonely')")
        conn.execute("SELECT setval('users_id_seq', 500, false)")
        conn.execute("INSERT INTO ident (name) VALUES ('x')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO ident (name) VALUES ('seed')")  # consumes an identity


def test_03_replica_role_silences_triggers_and_foreign_keys(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        try:
            conn.execute("SET session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the role may not set session_replication_role")
        conn.execute("INSERT INTO orders (user_id, amount) VALUES (999, 1)")
        conn.execute("DELETE FROM seeded")


def test_04_user_trigger_writes_another_table_and_cascade_deletes(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('audited@example.com')")
        conn.execute("DELETE FROM seeded WHERE id = 1")  # cascades to child


def test_05_truncate(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        conn.execute("TRUNCATE seeded CASCADE")
        conn.execute("TRUNCATE events, cache")


def test_06_copy_from(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        with conn.cursor().copy("COPY users (email) FROM STDIN") as copy:
            copy.write_row(["copied@example.com"])


def test_07_temporary_table_on_a_session_left_open(pg_url):
    check(pg_url)
    conn = connect(pg_url)
    conn.execute("CREATE TEMPORARY TABLE scratch (x int)")
    conn.execute("INSERT INTO scratch VALUES (1)")
    conn.execute("INSERT INTO users (email) VALUES ('temp@example.com')")
    LEFT_OPEN.append(conn)


def test_08_advisory_lock_and_listen_on_a_session_left_open(pg_url):
    check(pg_url)
    conn = connect(pg_url)
    conn.execute("SELECT pg_advisory_lock(42)")
    conn.execute("LISTEN jobs")
    with connect(pg_url) as notifier:
        notifier.execute("NOTIFY jobs, 'for the next test?'")
    LEFT_OPEN.append(conn)


def test_09_no_notification_reaches_the_next_test(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        conn.execute("LISTEN jobs")
        assert list(conn.notifies(timeout=0.3)) == []


def test_10_database_and_role_settings(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        name = sql.Identifier(database_of(pg_url))
        conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = '4321'").format(name))
        conn.execute(
            sql.SQL("ALTER ROLE CURRENT_USER IN DATABASE {} SET work_mem = '7MB'").format(name)
        )


def test_11_large_objects(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        conn.execute("SELECT lo_from_bytea(0, 'leaked')")


def test_12_create_table_and_function(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        conn.execute("CREATE TABLE extra (x int)")
        conn.execute("CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42'")


def test_13_alter_table_add_column(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN nickname text")


def test_14_drop_a_template_table(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        conn.execute("DROP TABLE audit CASCADE")


def test_15_create_index_concurrently_and_one_that_fails(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        conn.execute("CREATE INDEX CONCURRENTLY users_lower ON users (lower(email))")
        conn.execute("INSERT INTO cache VALUES ('a', 'same'), ('b', 'same')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY cache_v ON cache (v)")


def test_16_rename_and_comment_on_its_database(pg_url, pg_server):
    check(pg_url)
    name = database_of(pg_url)
    with connect(pg_url) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('renamed@example.com')")
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'mine now'").format(sql.Identifier(name)))
    with connect(pg_server.url) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(name), sql.Identifier(name + "_renamed")
            )
        )


def test_17_connection_limit(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        name = sql.Identifier(database_of(pg_url))
        conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 3").format(name))


def test_18_prepared_transaction(pg_url):
    check(pg_url)
    with connect(pg_url) as conn:
        if conn.execute("SHOW max_prepared_transactions").fetchone()[0] == "0":
            pytest.skip("the server has max_prepared_transactions = 0")
        conn.autocommit = False
        conn.execute("INSERT INTO users (email) VALUES ('prepared@example.com')")
        conn.execute("PREPARE TRANSACTION 'left behind'")


# pg_url databases take turns (one in use while others are reset): a few more tests make sure
# every database the tests above used is checked once more.
@pytest.mark.parametrize("turn", range(4))
def test_19_later_tests_see_the_template_state(pg_url, turn):
    check(pg_url)
"""


@pytest.fixture
def isolation_project(user_project: pytest.Pytester) -> pytest.Pytester:
    """The user's project with seed rows, an identity, triggers, a cascade and partitions."""
    (user_project.path / "migrations" / "002_seeded.sql").write_text(SCHEMA)
    return user_project


def test_no_test_sees_what_an_earlier_pg_url_test_did(
    isolation_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.environ.get("UNMOCKED_PROVIDER") != "url":
        # A server unmocked starts can take prepared transactions; the one given by URL may not.
        monkeypatch.setenv("UNMOCKED_SERVER_SETTINGS", "max_prepared_transactions=4")
    isolation_project.makepyfile(test_isolation=SUITE_HEAD + SUITE_TESTS)
    result = isolation_project.runpytest("-p", "no:randomly", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) + outcomes.get("skipped", 0) == 22
    if outcomes.get("skipped"):
        result.stdout.fnmatch_lines(["*max_prepared_transactions = 0*"])
    # Tests that only wrote rows, sequences or settings got a reset database; DDL made new clones.
    counts = re.search(r"22 fresh databases \((\d+) reset, (\d+) cloned\)", result.stdout.str())
    assert counts, result.stdout.str()
    assert int(counts[1]) >= 8


def test_a_role_a_test_creates_is_named_in_a_warning(
    user_project: pytest.Pytester, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["provider"] == "createdb":
        pytest.skip("a role with CREATEDB alone may not create roles")
    role = f"unmocked_test_role_{os.getpid()}"
    user_project.makepyfile(
        f"""
        import psycopg

        def test_creates_a_role(pg_url):
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("CREATE ROLE {role}")

        def test_cleans_up(pg_server):
            with psycopg.connect(pg_server.url, autocommit=True) as conn:
                conn.execute("DROP ROLE {role}")
        """
    )
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [f"*role {role} appeared on the server while *test_creates_a_role ran*"]
    )


def test_failed_test_keeps_its_database_for_unmocked_psql_until_gc(
    user_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    user_project.makepyfile(
        """
        import psycopg

        def test_fails_after_a_write(pg_url):
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("INSERT INTO users (email) VALUES ('kept@example.com')")
            assert False, "on purpose"

        def test_next_one_does_not_see_it(pg_url):
            with psycopg.connect(pg_url) as conn:
                assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        """
    )
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    kept = re.search(
        r"kept the database of failed \S+::test_fails_after_a_write: unmocked psql (\S+)",
        result.stdout.str(),
    )
    assert kept, result.stdout.str()
    name = kept[1]
    env = {**os.environ, **provider}
    opened = run_unmocked(
        "psql", name, "-At", "-c", "SELECT current_database(), email FROM users", env=env
    )
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip() == f"{name}|kept@example.com"
    collected = run_unmocked("gc", env=env)
    assert f"dropped {name}" in collected.stdout, collected.stdout + collected.stderr
    gone = run_unmocked("psql", name, "-c", "SELECT 1", env=env)
    assert gone.returncode == 1 and f"no database {name!r}" in gone.stderr


def test_a_schema_reset_cannot_undo_is_cloned_per_test_and_the_summary_says_why(
    user_project: pytest.Pytester,
) -> None:
    (user_project.path / "migrations" / "002_always.sql").write_text(
        "CREATE TABLE audit (what text);\n"
        "CREATE FUNCTION audit_user() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN INSERT INTO audit VALUES (NEW.email); RETURN NEW; END $$;\n"
        "CREATE TRIGGER users_audit AFTER INSERT ON users\n"
        "  FOR EACH ROW EXECUTE FUNCTION audit_user();\n"
        "ALTER TABLE users ENABLE ALWAYS TRIGGER users_audit;\n"
    )
    user_project.makepyfile(
        """
        import psycopg
        import pytest

        @pytest.mark.parametrize("turn", range(4))
        def test_writes_and_sees_only_its_own(pg_url, turn):
            with psycopg.connect(pg_url, autocommit=True) as conn:
                assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 0
                conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")
        """
    )
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*4 fresh databases (0 reset, 4 cloned)*",
            "unmocked: pg_url databases were cloned for every test, not reset: a trigger of the "
            "schema is ENABLE ALWAYS or REPLICA, so it would act during reset",
        ]
    )


OWNER_SCHEMA = """
CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE kid (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent);
CREATE TABLE grandkid (id int PRIMARY KEY, kid_id int NOT NULL REFERENCES kid ON DELETE RESTRICT);
CREATE TABLE audit (what text);
CREATE FUNCTION audited() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit VALUES (TG_OP || ' ' || TG_TABLE_NAME); RETURN NULL; END $$;
CREATE TRIGGER parent_audit AFTER INSERT OR UPDATE OR DELETE ON parent
  FOR EACH ROW EXECUTE FUNCTION audited();
CREATE TRIGGER kept_off AFTER INSERT ON kid FOR EACH ROW EXECUTE FUNCTION audited();
ALTER TABLE kid DISABLE TRIGGER kept_off;
INSERT INTO parent VALUES (1, 'one'), (2, 'two');
INSERT INTO kid VALUES (10, 1), (20, 2);
INSERT INTO grandkid VALUES (100, 10);
"""

# Each test first checks the template's state, then does what a reset by an owner (no event
# triggers, no session_replication_role) could get wrong.
OWNER_SUITE = """
import psycopg
import pytest

PRISTINE = []


def state(url):
    with psycopg.connect(url) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("parent", "kid", "grandkid", "audit")
        ] + [
            conn.execute("SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal "
                         "ORDER BY 1").fetchall(),
            conn.execute("SELECT count(*), obj_description('audit'::regclass) FROM pg_class "
                         "WHERE relnamespace = 'public'::regnamespace").fetchone(),
            conn.execute("SELECT relacl FROM pg_class WHERE relname = 'parent'").fetchone(),
            conn.execute("SELECT (SELECT count(*) FROM pg_policy), (SELECT count(*) FROM "
                         "pg_namespace WHERE nspname !~ '^pg_(toast_)?temp_'), "
                         "(SELECT count(*) FROM pg_extension)").fetchone(),
        ]


def check(url):
    if not PRISTINE:
        PRISTINE.append(state(url))
    assert state(url) == PRISTINE[0]


def write(url, *statements):
    check(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_01_a_parent_written_alone(pg_url):
    write(pg_url, "UPDATE parent SET name = 'changed' WHERE id = 1")


def test_02_every_level_written(pg_url):
    write(pg_url, "INSERT INTO parent VALUES (3, 'three')", "INSERT INTO kid VALUES (30, 3)",
          "INSERT INTO grandkid VALUES (300, 30)", "DELETE FROM grandkid WHERE id = 100")


def test_03_truncated_and_rewritten(pg_url):
    write(pg_url, "TRUNCATE parent, kid, grandkid", "VACUUM FULL audit", "REINDEX TABLE kid")


def test_04_the_kept_off_trigger_switched_on(pg_url):
    write(pg_url, "ALTER TABLE kid ENABLE TRIGGER kept_off", "INSERT INTO kid VALUES (40, 2)")


def test_05_unmockeds_own_trigger_switched_off(pg_url):
    write(pg_url, "ALTER TABLE parent DISABLE TRIGGER unmocked_note_write",
          "DELETE FROM grandkid", "DELETE FROM kid", "DELETE FROM parent")


def test_06_a_temporary_table_and_a_comment(pg_url):
    write(pg_url, "CREATE TEMPORARY TABLE scratch (x int)", "INSERT INTO audit VALUES ('x')")


def test_07_a_comment_is_a_schema_change(pg_url):
    write(pg_url, "COMMENT ON TABLE audit IS 'mine'")


def test_08_a_grant(pg_url):
    write(pg_url, "GRANT SELECT ON parent TO PUBLIC")


def test_09_a_policy_a_schema_and_an_extension(pg_url):
    write(pg_url, "CREATE POLICY mine ON audit USING (true)", "CREATE SCHEMA elsewhere",
          "CREATE EXTENSION IF NOT EXISTS citext")


@pytest.mark.parametrize("turn", range(4))
def test_10_later_tests_see_the_template_state(pg_url, turn):
    check(pg_url)
"""


def _owner_project(pytester: pytest.Pytester, schema: str, suite: str) -> None:
    pytester.mkdir("migrations").joinpath("001.sql").write_text(schema)
    pytester.makeini(
        "[pytest]\nunmocked_migrations = migrations\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(test_owner=suite)


@pytest.fixture
def as_a_createdb_role(
    pytester: pytest.Pytester,
    createdb_role_url: str,
    unmocked_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> pytest.Pytester:
    monkeypatch.setenv("UNMOCKED_PROVIDER", "url")
    monkeypatch.setenv("UNMOCKED_DATABASE_URL", createdb_role_url)
    monkeypatch.setenv("UNMOCKED_CACHE_DIR", str(unmocked_cache))
    return pytester


def test_a_createdb_roles_databases_are_reset_children_first_with_its_triggers_off(
    as_a_createdb_role: pytest.Pytester,
) -> None:
    _owner_project(as_a_createdb_role, OWNER_SCHEMA + f"-- {os.getpid()}\n", OWNER_SUITE)
    result = as_a_createdb_role.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=13)
    counts = re.search(r"13 fresh databases \((\d+) reset, (\d+) cloned\)", result.stdout.str())
    assert counts, result.stdout.str()
    # 01-03 and 06 are reset; 04, 05, 07-09 changed the schema: their databases are cloned anew.
    assert int(counts[1]) >= 4, result.stdout.str()
    assert "cloned for every test" not in result.stdout.str()


def test_a_createdb_role_granted_session_replication_role_is_reset_with_it(
    pytester: pytest.Pytester, unmocked_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL 15's ``GRANT SET ON PARAMETER``: the catalogs watch, and the replica reset."""
    role = f"unmocked_replica_{os.getpid()}"
    with a_role_of_its_own(RUNNING_SERVER_URL, role, "CREATEDB") as url:
        with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as admin:
            if admin.info.server_version < 150000:
                pytest.skip("GRANT SET ON PARAMETER came with PostgreSQL 15")
            grant = sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}")
            admin.execute(grant.format(sql.Identifier(role)))
        try:
            monkeypatch.setenv("UNMOCKED_PROVIDER", "url")
            monkeypatch.setenv("UNMOCKED_DATABASE_URL", url)
            monkeypatch.setenv("UNMOCKED_CACHE_DIR", str(unmocked_cache))
            _owner_project(pytester, OWNER_SCHEMA + f"-- replica {os.getpid()}\n", OWNER_SUITE)
            result = pytester.runpytest("-p", "no:randomly")
        finally:
            with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as admin:
                revoke = sql.SQL("REVOKE SET ON PARAMETER session_replication_role FROM {}")
                admin.execute(revoke.format(sql.Identifier(role)))
    result.assert_outcomes(passed=13)
    counts = re.search(r"13 fresh databases \((\d+) reset", result.stdout.str())
    assert counts and int(counts[1]) >= 4, result.stdout.str()


def test_foreign_keys_in_a_cycle_are_cloned_per_test_for_a_createdb_role_and_said_why(
    as_a_createdb_role: pytest.Pytester,
) -> None:
    schema = (
        f"CREATE TABLE a (id int PRIMARY KEY, b_id int); -- {os.getpid()}\n"
        "CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a);\n"
        "ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b;\n"
        "INSERT INTO a VALUES (1, NULL); INSERT INTO b VALUES (1, 1);\n"
        "UPDATE a SET b_id = 1;\n"
    )
    suite = """
import psycopg
import pytest

@pytest.mark.parametrize("turn", range(4))
def test_writes_and_sees_only_the_template(pg_url, turn):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM b").fetchone()[0] == 1
        conn.execute("INSERT INTO a VALUES (2, 1)")
        conn.execute("UPDATE a SET b_id = NULL")
"""
    _owner_project(as_a_createdb_role, schema, suite)
    result = as_a_createdb_role.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*4 fresh databases (0 reset, 4 cloned)*",
            "unmocked: pg_url databases were cloned for every test, not reset: its tables "
            "reference each other in a cycle of foreign keys that are not deferrable, *",
        ]
    )
