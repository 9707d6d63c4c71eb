"""Ownership: unmocked drops only databases it created, and collects those of runs that died.

Every database a test makes is named ``unmocked_test_<run>_*`` (or ``unmocked_lookalike_*`` for
the ones a user might make) and is dropped afterwards, even the ones unmocked refuses to drop.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from unmocked import ownership
from unmocked.errors import DatabaseError
from unmocked.ownership import AdminConnection, Lease, Owner
from unmocked.urls import with_database

ADMIN_URL = os.environ.get(
    "UNMOCKED_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# An advisory lock of these tests' own ("unts"), not one of the classes unmocked takes.
COLLECTING_LOCK = (0x756E7473, 1)


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def admin() -> Iterator[AdminConnection]:
    """An autocommit connection to the admin database of the test server."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        yield conn


@pytest.fixture
def live_run() -> Iterator[Lease]:
    """A run that is alive: its lease is held for the whole test."""
    lease = Lease(ADMIN_URL, ownership.new_run_id())
    yield lease
    lease.close()


@pytest.fixture
def dead_run() -> str:
    """The id of a run that no lease holds, as if its process had died."""
    return ownership.new_run_id()


@pytest.fixture
def our_database(admin: AdminConnection, live_run: Lease) -> Iterator[Callable[[str, Owner], str]]:
    """Create a database the way unmocked does, named ``unmocked_test_<run>_<suffix>``.

    Whatever is left of them after the test is dropped by plain SQL, whatever unmocked thinks.
    """
    names: list[str] = []

    def create(suffix: str, owner: Owner) -> str:
        name = f"{ownership.PREFIX}test_{live_run.run_id}_{suffix}"
        names.append(name)
        ownership.create_database(admin, name, owner, "template0", None)
        return name

    yield create
    for name in names:
        drop_by_hand(name)


@pytest.fixture
def user_database(admin: AdminConnection, live_run: Lease) -> Iterator[str]:
    """A database the user created, whose name merely looks like one of unmocked's."""
    name = f"{ownership.PREFIX}lookalike_{live_run.run_id}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    drop_by_hand(name)


@pytest.fixture
def collecting_alone() -> Iterator[None]:
    """No other test of this module collects at the same time, in any process (xdist workers).

    Collectors wait for each other, and these tests are about what one collector does.
    """
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", COLLECTING_LOCK)
        yield


@contextlib.contextmanager
def others_wait(admin: AdminConnection) -> Iterator[None]:
    """Other processes' collections (any run that starts on this server meanwhile, another
    worker's included) wait: what the test makes is its own collection's to drop. That collection
    runs on ``admin`` too, whose lock lets it in (advisory locks stack within a session)."""
    admin.execute("SELECT pg_advisory_lock(%s, 0)", (ownership.GC_LOCK_CLASS,))
    try:
        yield
    finally:
        admin.execute("SELECT pg_advisory_unlock(%s, 0)", (ownership.GC_LOCK_CLASS,))


def drop_by_hand(name: str) -> None:
    """Drop ``name`` with plain SQL, whether or not unmocked would.

    On a connection of its own: a test's admin connection may have been closed by the server.
    """
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        if exists(conn, name):
            identifier = sql.Identifier(name)
            conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(identifier))
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(identifier))


def exists(admin: AdminConnection, name: str) -> bool:
    row = admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row == (1,)


def comment_on(admin: AdminConnection, name: str, comment: str) -> None:
    admin.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment))
    )


# -- creating and dropping --------------------------------------------------------------------


def test_create_database_refuses_names_without_the_unmocked_prefix(
    admin: AdminConnection, live_run: Lease
) -> None:
    name = f"test_{live_run.run_id}_unprefixed"

    with pytest.raises(DatabaseError, match="only databases named unmocked_"):
        ownership.create_database(
            admin, name, Owner("fresh", run=live_run.run_id), "template0", None
        )

    assert not exists(admin, name)


def test_create_database_records_what_the_database_is_and_which_run_owns_it(
    admin: AdminConnection, live_run: Lease, our_database: Callable[[str, Owner], str]
) -> None:
    owner = Owner("fresh", run=live_run.run_id)

    name = our_database("fresh", owner)

    assert ownership.owner_of(admin, name) == owner
    assert (name, owner) in ownership.our_databases(admin)


def test_drop_database_drops_our_database_even_while_someone_is_connected(
    admin: AdminConnection, live_run: Lease, our_database: Callable[[str, Owner], str]
) -> None:
    name = our_database("busy", Owner("fresh", run=live_run.run_id))
    busy = psycopg.connect(with_database(ADMIN_URL, name))

    try:
        ownership.drop_database(admin, name)
    finally:
        busy.close()

    assert not exists(admin, name)


def test_drop_database_drops_a_template_of_ours(
    admin: AdminConnection, our_database: Callable[[str, Owner], str]
) -> None:
    name = our_database("tpl", Owner("template", fingerprint="f" * 64))
    admin.execute(
        sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
            sql.Identifier(name)
        )
    )

    ownership.drop_database(admin, name)

    assert not exists(admin, name)


@pytest.mark.parametrize(
    "comment",
    [None, "the team's scratch data", 'unmocked:{"kind": "fresh"'],
    ids=["no-comment", "user-comment", "broken-tag"],
)
def test_drop_database_never_drops_a_database_unmocked_did_not_create(
    comment: str | None, admin: AdminConnection, user_database: str
) -> None:
    if comment is not None:
        comment_on(admin, user_database, comment)

    ownership.drop_database(admin, user_database)

    assert exists(admin, user_database)
    assert user_database not in [name for name, _ in ownership.our_databases(admin)]


def test_drop_database_of_a_missing_database_does_nothing(
    admin: AdminConnection, live_run: Lease
) -> None:
    ownership.drop_database(admin, f"{ownership.PREFIX}test_{live_run.run_id}_never_created")


# -- leases and collecting what dead runs left ------------------------------------------------


def test_run_is_alive_while_its_lease_is_held_and_not_after(admin: AdminConnection) -> None:
    lease = Lease(ADMIN_URL, ownership.new_run_id())
    assert ownership.run_is_alive(admin, lease.run_id)

    lease.close()

    # The server releases the lock when the lease's backend has exited, a moment after close().
    deadline = time.monotonic() + 5
    while ownership.run_is_alive(admin, lease.run_id) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ownership.run_is_alive(admin, lease.run_id)


def test_collect_abandoned_drops_databases_of_a_run_whose_lease_is_gone(
    collecting_alone: None,
    admin: AdminConnection,
    dead_run: str,
    our_database: Callable[[str, Owner], str],
) -> None:
    with others_wait(admin):
        fresh = our_database("dead_fresh", Owner("fresh", run=dead_run))
        build = our_database("dead_build", Owner("build", run=dead_run, fingerprint="a" * 64))

        dropped = ownership.collect_abandoned(admin)

    assert {fresh, build} <= set(dropped)
    assert not exists(admin, fresh)
    assert not exists(admin, build)


def test_collect_abandoned_keeps_databases_of_a_live_run(
    collecting_alone: None,
    admin: AdminConnection,
    live_run: Lease,
    our_database: Callable[[str, Owner], str],
) -> None:
    name = our_database("alive", Owner("rollback", run=live_run.run_id))

    dropped = ownership.collect_abandoned(admin)

    assert name not in dropped
    assert exists(admin, name)


def test_the_session_holding_a_runs_lease_collects_without_taking_its_own_run_for_dead(
    collecting_alone: None,
    live_run: Lease,
    our_database: Callable[[str, Owner], str],
) -> None:
    # The lease's session is the run's admin session, which collects as the run starts: its own
    # lock never refuses it, so trying to take it would find the run dead and drop its databases.
    holder = live_run.conn
    idle = our_database("mine_idle", Owner("fresh", run=live_run.run_id))

    assert ownership.run_is_alive(holder, live_run.run_id)
    assert idle not in ownership.collect_abandoned(holder)
    assert exists(holder, idle)
    assert ownership.run_is_alive(holder, live_run.run_id)  # still held: nothing let it go


def test_collect_abandoned_keeps_templates_even_when_their_run_is_gone(
    collecting_alone: None,
    admin: AdminConnection,
    dead_run: str,
    our_database: Callable[[str, Owner], str],
) -> None:
    name = our_database("kept_tpl", Owner("template", run=dead_run, fingerprint="b" * 64))

    dropped = ownership.collect_abandoned(admin)

    assert name not in dropped
    assert exists(admin, name)


def test_a_database_kept_for_a_failed_test_outlives_its_run_until_it_is_old_or_gc_runs(
    collecting_alone: None,
    admin: AdminConnection,
    dead_run: str,
    our_database: Callable[[str, Owner], str],
) -> None:
    name = our_database("kept", Owner("kept", run=dead_run, test="t", since=int(time.time())))

    assert name not in ownership.collect_abandoned(admin)
    assert name in ownership.collect_abandoned(admin, kept_for=0)  # what `unmocked gc` does


def test_a_kept_database_older_than_the_bound_is_collected_by_a_later_run(
    collecting_alone: None,
    admin: AdminConnection,
    dead_run: str,
    our_database: Callable[[str, Owner], str],
) -> None:
    long_ago = int(time.time()) - ownership.KEPT_FOR_SECONDS - 1
    with others_wait(admin):
        name = our_database("old_kept", Owner("kept", run=dead_run, test="t", since=long_ago))

        assert name in ownership.collect_abandoned(admin)


def test_drop_database_rolls_back_its_prepared_transactions_first(
    admin: AdminConnection, our_database: Callable[[str, Owner], str], live_run: Lease
) -> None:
    if admin.execute("SHOW max_prepared_transactions").fetchone() == ("0",):
        pytest.skip("the test server has max_prepared_transactions = 0")
    name = our_database("prepared", Owner("fresh", run=live_run.run_id))
    with psycopg.connect(with_database(ADMIN_URL, name)) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("PREPARE TRANSACTION 'unmocked-test'")

    ownership.drop_database(admin, name)

    assert not exists(admin, name)


def collect_concurrently(collectors: int) -> list[str]:
    """Run ``collect_abandoned`` in that many sessions at once; return what each one raised."""
    all_ready = threading.Barrier(collectors)
    errors: list[str] = []

    def collect() -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            all_ready.wait(timeout=10)
            try:
                ownership.collect_abandoned(conn)
            except psycopg.Error as error:
                errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=collect) for _ in range(collectors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


def test_collectors_running_at_once_over_the_same_abandoned_databases_all_succeed(
    collecting_alone: None, dead_run: str, our_database: Callable[[str, Owner], str]
) -> None:
    errors: list[str] = []
    # Four rounds in five lose the race; stop at the first loss.
    for round_number in range(6):
        for index in range(2):
            our_database(f"race_{round_number}_{index}", Owner("fresh", run=dead_run))
        errors = collect_concurrently(4)
        if errors:
            break

    assert errors == []


# -- the comment and the lock key -------------------------------------------------------------


@pytest.mark.parametrize(
    "owner",
    [
        Owner("template", fingerprint="c" * 64),
        Owner("template", fingerprint="c" * 64, used=1_790_000_000),
        Owner("fresh", run="0123456789"),
        Owner("build", run="0123456789", fingerprint="d" * 64, since=1, pid=4242, host="ci-7"),
    ],
)
def test_owner_survives_the_round_trip_through_the_database_comment(owner: Owner) -> None:
    assert Owner.parse(owner.comment()) == owner


def test_a_comment_with_fields_of_a_later_unmocked_still_names_the_owner() -> None:
    comment = 'unmocked:{"kind": "template", "fingerprint": "e", "used": 5, "shiny": [1]}'

    assert Owner.parse(comment) == Owner("template", fingerprint="e", used=5)


@pytest.mark.parametrize(
    "comment",
    [
        None,
        "",
        "user notes",
        "unmocked:not json",
        "unmocked:{}",
        'unmocked:{"x": 1}',
        "unmocked:[1]",
    ],
)
def test_comment_that_unmocked_did_not_write_has_no_owner(comment: str | None) -> None:
    assert Owner.parse(comment) is None


@pytest.mark.parametrize(
    ("text", "key"),
    [("00000000ab", 0), ("7fffffffab", 2**31 - 1), ("80000000ab", -(2**31)), ("ffffffff", -1)],
)
def test_lock_key_is_a_signed_32_bit_integer_from_the_first_eight_hex_digits(
    text: str, key: int
) -> None:
    assert ownership.lock_key(text) == key
