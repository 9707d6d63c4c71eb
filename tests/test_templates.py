"""Templates: built once per migration fingerprint and server major, reused after, never half-built.

Every test's migrations carry a random token, so its template is its own (never a cache hit from
another run); each template a test may have made is dropped afterwards.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from helpers import a_role_of_its_own
from unmocked import ownership, templates
from unmocked.build_watch import progress_lines_to
from unmocked.errors import MigrationError
from unmocked.migrations import MigrationSource
from unmocked.migrations.python_object import PythonCallable
from unmocked.migrations.sql_files import SqlFiles
from unmocked.ownership import AdminConnection, Owner
from unmocked.templates import (
    Template,
    ensure_template,
    template_fingerprint,
    template_name,
)
from unmocked.urls import with_database

ADMIN_URL = os.environ.get(
    "UNMOCKED_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ADMIN_ROLE = str(conninfo_to_dict(ADMIN_URL)["user"])  # it builds the templates, so names them


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def admin() -> Iterator[AdminConnection]:
    """An autocommit connection to the admin database of the test server."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        yield conn


@pytest.fixture
def major(admin: AdminConnection) -> int:
    """The test server's major version."""
    return admin.info.server_version // 10000


@pytest.fixture
def run_id() -> Iterator[str]:
    """The id of a live run: its lease is held, so no other session collects its databases."""
    lease = ownership.Lease(ADMIN_URL, ownership.new_run_id())
    yield lease.run_id
    lease.close()


@pytest.fixture
def templates_of(admin: AdminConnection, major: int) -> Iterator[Callable[[MigrationSource], str]]:
    """The template name of a source, remembered so that the template is dropped after the test."""
    names: list[str] = []

    def remember(source: MigrationSource) -> str:
        names.append(template_name(template_fingerprint(source, major, ADMIN_ROLE)))
        return names[-1]

    yield remember
    for name in names:
        ownership.drop_database(admin, name)


@pytest.fixture
def ensure(
    admin: AdminConnection,
    major: int,
    run_id: str,
    templates_of: Callable[[MigrationSource], str],
) -> Callable[[MigrationSource], Template]:
    """``ensure_template`` for the test server, as a live run; its templates are dropped after."""

    def ensure_(source: MigrationSource) -> Template:
        templates_of(source)
        return ensure_template(admin, ADMIN_URL, source, major, run_id)

    return ensure_


def sql_source(folder: Path, schema: str) -> SqlFiles:
    """One migration file holding ``schema``, made unique to this test by a comment."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "001_schema.sql").write_text(f"-- {secrets.token_hex(8)}\n{schema}\n")
    return SqlFiles(folder, folder.parent)


@pytest.fixture(scope="module")
def users_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SqlFiles, Template]]:
    """One migrated template (a ``users`` table) for the tests that only look at it; dropped after.

    Its first build is returned as it was, so ``reused`` tells whether that call built it.
    """
    source = sql_source(
        tmp_path_factory.mktemp("users") / "migrations", "CREATE TABLE users (id int);"
    )
    lease = ownership.Lease(ADMIN_URL, ownership.new_run_id())
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        major = admin.info.server_version // 10000
        try:
            yield source, ensure_template(admin, ADMIN_URL, source, major, lease.run_id)
        finally:
            ownership.drop_database(
                admin, template_name(template_fingerprint(source, major, ADMIN_ROLE))
            )
            lease.close()


def databases_named(admin: AdminConnection, pattern: str) -> list[str]:
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,)
    ).fetchall()
    return [str(row[0]) for row in rows]


class CountingMigration:
    """Creates a table after a pause, counting its calls in a file that every thread appends to."""

    def __init__(self, calls: Path) -> None:
        self.calls = calls
        self.unmocked_fingerprint = secrets.token_hex(8)

    def __call__(self, url: str) -> None:
        with self.calls.open("a") as calls:
            calls.write("called\n")
        time.sleep(0.5)
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE parts (id int)")


class SleepingMigration:
    """Runs ``pg_sleep`` in the database, as a migration stuck on a slow statement does."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.unmocked_fingerprint = secrets.token_hex(8)

    def __call__(self, url: str) -> None:
        with psycopg.connect(url) as conn:
            conn.execute("SELECT pg_sleep(%s)", (self.seconds,))  # the line progress names


class BlockedMigration:
    """Waits ``seconds`` for a table lock another session of its own holds, then goes on."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.unmocked_fingerprint = secrets.token_hex(8)
        self.holder_pid = 0

    def __call__(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn, psycopg.connect(url) as holder:
            conn.execute("CREATE TABLE parts (id int)")
            holder.execute("LOCK parts")
            self.holder_pid = holder.info.backend_pid
            threading.Timer(self.seconds, holder.commit).start()
            conn.execute("SELECT * FROM parts")


class ForgetfulMigration:
    """Creates a table and keeps its connection open, as a migration with a pool might."""

    def __init__(self) -> None:
        self.unmocked_fingerprint = secrets.token_hex(8)
        self.connections: list[psycopg.Connection[tuple[object, ...]]] = []

    def __call__(self, url: str) -> None:
        conn = psycopg.connect(url, autocommit=True)
        conn.execute("CREATE TABLE notes (id int)")
        self.connections.append(conn)


# -- tests ------------------------------------------------------------------------------------


def test_template_is_built_once_then_reused_for_the_same_migrations_and_major(
    admin: AdminConnection,
    major: int,
    run_id: str,
    users_template: tuple[SqlFiles, Template],
) -> None:
    source, first = users_template

    again = ensure_template(admin, ADMIN_URL, source, major, run_id)
    other_run = ensure_template(admin, ADMIN_URL, source, major, ownership.new_run_id())

    assert (first.reused, again.reused, other_run.reused) == (False, True, True)
    assert first.name == again.name == other_run.name


def test_changed_migrations_are_a_new_template(
    tmp_path: Path,
    users_template: tuple[SqlFiles, Template],
    ensure: Callable[[MigrationSource], Template],
) -> None:
    source, before = users_template
    changed = tmp_path / "migrations"
    shutil.copytree(source.folder, changed)
    (changed / "002_orders.sql").write_text("CREATE TABLE orders (id int);")

    after = ensure(SqlFiles(changed, tmp_path))

    assert after.name != before.name
    assert after.reused is False


def test_template_name_depends_on_the_server_major_version(tmp_path: Path) -> None:
    source = sql_source(tmp_path / "migrations", "CREATE TABLE users (id int);")

    names = {
        template_name(template_fingerprint(source, major, ADMIN_ROLE)) for major in (15, 16, 17)
    }

    assert len(names) == 3
    assert all(name.startswith("unmocked_tpl_") for name in names)


def test_a_role_that_is_not_superuser_builds_a_template_of_its_own_and_may_use_its_tables(
    ensure: Callable[[MigrationSource], Template], run_id: str, major: int, tmp_path: Path
) -> None:
    """A superuser's template holds tables the superuser owns: a CREATEDB role cloning it could
    not read them (a shared server, a run of each role). Each role's is its own."""
    source = sql_source(tmp_path / "migrations", "CREATE TABLE users (id int);")
    by_superuser = ensure(source)
    role = f"unmocked_builder_{os.getpid()}"
    with (
        a_role_of_its_own(ADMIN_URL, role, "CREATEDB") as url,
        psycopg.connect(url, autocommit=True) as as_role,
    ):
        own = ensure_template(as_role, url, source, major, run_id)
        assert own.name != by_superuser.name and own.reused is False
        assert own.name == template_name(template_fingerprint(source, major, role))
        clone = f"{ownership.PREFIX}test_{run_id}_as_role"
        ownership.create_database(as_role, clone, Owner("fresh", run=run_id), own.name, None)
        with psycopg.connect(with_database(url, clone)) as inside:
            assert inside.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_template_is_marked_as_template_and_refuses_connections(
    admin: AdminConnection, users_template: tuple[SqlFiles, Template]
) -> None:
    _, template = users_template

    flags = admin.execute(
        "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = %s",
        (template.name,),
    ).fetchone()

    assert flags == (True, False)
    owner = ownership.owner_of(admin, template.name)
    assert owner is not None
    assert owner == Owner("template", fingerprint=template.fingerprint, used=owner.used)
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(with_database(ADMIN_URL, template.name)).close()


def test_database_cloned_from_the_template_has_the_migrated_schema(
    admin: AdminConnection, run_id: str, users_template: tuple[SqlFiles, Template]
) -> None:
    _, template = users_template
    clone = f"{ownership.PREFIX}test_{run_id}_clone"

    ownership.create_database(admin, clone, Owner("fresh", run=run_id), template.name, None)
    try:
        with psycopg.connect(with_database(ADMIN_URL, clone)) as conn:
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE tablename = 'users'")
            assert tables.fetchall() == [("users",)]
    finally:
        ownership.drop_database(admin, clone)


def test_failed_migration_leaves_neither_the_template_nor_the_build_database(
    admin: AdminConnection,
    major: int,
    tmp_path: Path,
    ensure: Callable[[MigrationSource], Template],
) -> None:
    source = sql_source(tmp_path / "migrations", "CREATE TABLE users (id int);\nCREATE TABL x;")

    with pytest.raises(MigrationError, match="nothing was cached"):
        ensure(source)

    # Both the template and the build database carry the fingerprint in their name.
    fingerprint = template_fingerprint(source, major, ADMIN_ROLE)
    assert databases_named(admin, f"unmocked%{fingerprint[:16]}%") == []


def test_template_left_unmarked_by_an_interrupted_build_is_rebuilt(
    admin: AdminConnection,
    tmp_path: Path,
    ensure: Callable[[MigrationSource], Template],
    templates_of: Callable[[MigrationSource], str],
) -> None:
    source = sql_source(tmp_path / "migrations", "CREATE TABLE users (id int);")
    name = templates_of(source)
    # Renamed into place but never marked a template: what a build killed at that moment leaves.
    ownership.create_database(admin, name, Owner("template"), "template0", None)

    template = ensure(source)

    assert (template.name, template.reused) == (name, False)
    flags = admin.execute(
        "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    assert flags == (True,)


def test_sessions_a_migration_leaves_open_do_not_stop_the_template(
    admin: AdminConnection, ensure: Callable[[MigrationSource], Template]
) -> None:
    migration = ForgetfulMigration()

    try:
        template = ensure(PythonCallable("tests:forgetful", migration))
    finally:
        for conn in migration.connections:
            conn.close()

    flags = admin.execute(
        "SELECT datistemplate FROM pg_database WHERE datname = %s", (template.name,)
    ).fetchone()
    assert flags == (True,)


def test_concurrent_builders_run_the_migration_once_and_share_the_template(
    major: int, tmp_path: Path, templates_of: Callable[[MigrationSource], str]
) -> None:
    calls = tmp_path / "calls.txt"
    source = PythonCallable("tests:counting", CountingMigration(calls))
    templates_of(source)
    both_ready = threading.Barrier(2)

    def build() -> Template:
        # Each builder is its own run, with its own lease and admin connection, as two workers are.
        lease = ownership.Lease(ADMIN_URL, ownership.new_run_id())
        try:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                both_ready.wait(timeout=10)
                return ensure_template(conn, ADMIN_URL, source, major, lease.run_id)
        finally:
            lease.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(build) for _ in range(2)]
        templates = [future.result(timeout=30) for future in futures]

    assert calls.read_text().splitlines() == ["called"]
    assert sorted(template.reused for template in templates) == [False, True]
    assert templates[0].name == templates[1].name


# -- slow builds, timeouts and the last use ---------------------------------------------------


def test_a_migration_past_the_build_timeout_is_cancelled_naming_its_line_and_nothing_is_cached(
    admin: AdminConnection, major: int, run_id: str, templates_of: Callable[[MigrationSource], str]
) -> None:
    source = PythonCallable("tests:sleeping", SleepingMigration(3600))
    templates_of(source)
    started = time.monotonic()

    lines: list[str] = []

    with progress_lines_to(lines.append), pytest.raises(MigrationError) as raised:
        ensure_template(admin, ADMIN_URL, source, major, run_id, timeout=1)

    assert time.monotonic() - started < 10
    assert len(lines) == 1 and lines[0].endswith(": cancelling it"), lines
    assert re.fullmatch(
        r"Building template unmocked_tpl_\w+ \(callable tests:sleeping\) took longer than "
        r"unmocked_build_timeout allows \(1 s\): \S*test_templates\.py, line \d+ was running, "
        r"and unmocked cancelled it\. Nothing was cached\. .*",
        str(raised.value),
    )
    fingerprint = template_fingerprint(source, major, ADMIN_ROLE)
    assert databases_named(admin, f"unmocked%{fingerprint[:16]}%") == []
    left = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(%%'"
        " AND datname LIKE %s",
        (f"unmocked%{fingerprint[:16]}%",),
    ).fetchone()
    assert left == (0,)


def test_a_slow_migration_is_named_by_the_line_of_its_own_code_that_runs(
    ensure: Callable[[MigrationSource], Template],
) -> None:
    lines: list[str] = []

    with progress_lines_to(lines.append):
        ensure(PythonCallable("tests:sleeping", SleepingMigration(2.6)))

    assert len(lines) == 1, lines
    assert re.fullmatch(
        r"unmocked: building template unmocked_tpl_\w+ \(callable tests:sleeping\) for \d s: "
        r"\S*test_templates\.py, line \d+ has run for \d s; it is cancelled at 600 s "
        r"\(unmocked_build_timeout\)",
        lines[0],
    )


def test_a_slow_migration_waiting_for_a_lock_is_said_to_wait_and_for_whom(
    ensure: Callable[[MigrationSource], Template],
) -> None:
    migration = BlockedMigration(2.6)
    lines: list[str] = []

    with progress_lines_to(lines.append):
        ensure(PythonCallable("tests:blocked", migration))

    assert len(lines) == 1, lines
    assert re.fullmatch(
        r"unmocked: building template unmocked_tpl_\w+ \(callable tests:blocked\) for \d s: "
        r"\S*test_templates\.py, line \d+ has run for \d s, waiting for a lock that PostgreSQL "
        rf"session {migration.holder_pid} holds; it is cancelled at 600 s "
        r"\(unmocked_build_timeout\)",
        lines[0],
    ), lines


def test_a_run_gives_up_waiting_for_a_build_that_never_ends_naming_who_holds_it(
    admin: AdminConnection,
    major: int,
    run_id: str,
    tmp_path: Path,
    templates_of: Callable[[MigrationSource], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(templates, "WAIT_GRACE", 0.5)
    source = sql_source(tmp_path / "migrations", "CREATE TABLE users (id int);")
    templates_of(source)
    fingerprint = template_fingerprint(source, major, ADMIN_ROLE)
    with psycopg.connect(ADMIN_URL, autocommit=True) as stuck:
        # Another run's build, stuck while it holds the build lock.
        stuck.execute(
            "SELECT pg_advisory_lock(%s, %s)",
            (ownership.TEMPLATE_LOCK_CLASS, ownership.lock_key(fingerprint)),
        )
        started = time.monotonic()

        with pytest.raises(MigrationError) as raised:
            ensure_template(admin, ADMIN_URL, source, major, run_id, timeout=1)

        assert time.monotonic() - started < 5
        assert re.fullmatch(
            r"Waited 2 s for another run's build of template unmocked_tpl_\w+ \(1 SQL files in "
            r"migrations\), and gave up: PostgreSQL session "
            rf"{stuck.info.backend_pid} \(from 127\.0\.0\.1\) holds its build lock, longer than "
            r"unmocked_build_timeout \(1 s\) allows\. Nothing was cached\. .*",
            str(raised.value),
        )
    assert ensure_template(admin, ADMIN_URL, source, major, run_id, timeout=1).reused is False


def test_a_template_records_its_last_use_when_built_and_when_reused_at_most_hourly(
    admin: AdminConnection, ensure: Callable[[MigrationSource], Template], tmp_path: Path
) -> None:
    source = sql_source(tmp_path / "migrations", "CREATE TABLE users (id int);")
    built = ensure(source)

    def last_use() -> int:
        owner = ownership.owner_of(admin, built.name)
        assert owner is not None and owner.used is not None
        return owner.used

    def used_ago(seconds: int) -> None:
        owner = ownership.owner_of(admin, built.name)
        assert owner is not None
        ownership.record_owner(admin, built.name, replace(owner, used=int(time.time()) - seconds))

    assert abs(last_use() - time.time()) < 60
    used_ago(30 * 60)
    ensure(source)
    assert time.time() - last_use() >= 30 * 60, "recorded again within the hour"
    used_ago(2 * 3600)
    ensure(source)
    assert abs(last_use() - time.time()) < 60
