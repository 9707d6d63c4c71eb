"""This process's ``pg_url`` databases: cloned when none is ready, put back in place after a test.

Cloning a database per test costs tens of milliseconds on a real schema; putting a used one back to
the template's state costs a few, when the database can say exactly what the test changed. So pg_url
databases are cloned from a copy of the template that carries the reset machinery of
:mod:`unmocked.fresh.reset` (built once per template, cached like it), and after each test:

1. every session still connected to the database is ended, and waited for: their temporary tables,
   advisory locks, LISTENs and unsent notifications go with them; prepared transactions are rolled
   back;
2. its ``pg_database`` row (owner, ACL, connection limit, comment, name...) is compared with what it
   was when handed out: any change, or a database the test dropped, means a new clone. Settings a
   test gave the database (``ALTER DATABASE ... SET``, ``ALTER ROLE ... IN DATABASE ... SET``) are
   reset, as the template has none;
3. it is renamed, so that the next test gets a URL no code has cached a connection pool for;
4. one function call inside it puts back the written tables' rows, the sequences and the large
   objects, or says why it cannot (the schema changed), and then it is dropped and cloned anew.

Steps 1-3 happen as the test ends, in one round trip with the look for the sessions the test
left (:mod:`unmocked.checks.leaks`), so its URL is dead at once; step 4 runs on the server while
the next test runs on another database, on a session a thread opens meanwhile. Each database's
:class:`Stage` says where it is in that life. Objects and settings of the whole server (roles,
databases, tablespaces, replication slots; ``ALTER SYSTEM``, role and database settings) cannot
be put back inside one database: :meth:`FreshPool.release` returns those that appeared during the
test, for the caller to name.

A role that is no superuser (a managed service's, on a server given by URL) gets machinery of its
own that needs no event triggers and no ``session_replication_role`` (see
:mod:`unmocked.fresh.reset`). A server older than PostgreSQL 14 (which cannot wait for a session
to end) gets a clone per test and a drop after it, as exact and slower.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from unmocked import cluster_objects, ownership, templates
from unmocked.checks import leaks
from unmocked.errors import DatabaseError, UnmockedError
from unmocked.fresh import reset
from unmocked.fresh.reset import ResetInside
from unmocked.ownership import AdminConnection, Owner
from unmocked.servers import known_state
from unmocked.templates import Template, ensure_template
from unmocked.urls import with_database

# Databases a process holds for pg_url at most: one for the test running, the others on their way
# back to the template's state meanwhile. Each is a full copy of the template, so they are cloned
# only when every one is busy.
POOL_SIZE = 4

# Databases kept for failed tests per process: enough to look into, not a server full of copies.
KEEP_AT_MOST = 5

# How long ending a test's sessions may take before the database is given up (dropped) instead.
SESSION_END_SECONDS = 5

# What of a database's pg_database row a test may change, besides its name (tracked by OID).
_ROW_STATE = """(datdba, datistemplate, datallowconn, datconnlimit, datacl, dattablespace,
                 shobj_description(oid, 'pg_database'))::text"""

_RELEASE_SETTING = "unmocked.released"
"""The admin session's setting where steps 1-3 leave how they went: ``renamed``, else what
stopped them (``sessions stay``, ``changed``, ``settings``)."""

# Steps 1-3 in one statement; how they went is left in _RELEASE_SETTING, not raised, so that the
# round trip's look for leaks (see unmocked.checks.leaks), committed with it, is read either way.
# pg_stat_get_activity and pg_prepared_xact, not the views over them: a DO block plans every
# statement anew, and the views' joins cost about half a millisecond each.
_END_SESSIONS_AND_RENAME = f"""
DECLARE
  deadline timestamptz := clock_timestamp() + make_interval(secs => {{seconds}});
  outcome text := 'renamed';
BEGIN
  PERFORM pg_terminate_backend(pid) FROM pg_stat_get_activity(NULL)
   WHERE datid = {{oid}} AND pid <> pg_backend_pid();
  LOOP
    PERFORM pg_stat_clear_snapshot();  -- else pg_stat_activity stays as this transaction saw it
    EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_get_activity(NULL) WHERE datid = {{oid}});
    IF clock_timestamp() > deadline THEN
      outcome := 'sessions stay';
      EXIT;
    END IF;
    PERFORM pg_sleep(0.0005);
  END LOOP;
  IF outcome <> 'renamed' THEN
    NULL;
  ELSIF NOT EXISTS (SELECT FROM pg_database
                     WHERE oid = {{oid}} AND datname = {{name}} AND {{row_state}} = {{state}}) THEN
    outcome := 'changed';
  ELSIF EXISTS (SELECT FROM pg_db_role_setting WHERE setdatabase = {{oid}})
     OR EXISTS (SELECT FROM pg_prepared_xact() WHERE dbid = {{oid}}) THEN
    outcome := 'settings';
  ELSE
    EXECUTE format('ALTER DATABASE %I RENAME TO %I', {{name}}, {{new_name}});
  END IF;
  PERFORM set_config('{_RELEASE_SETTING}', outcome, false);
END
"""
_READ_OUTCOME = sql.SQL(f"SELECT current_setting('{_RELEASE_SETTING}')")


class Stage(enum.Enum):
    """Where a pg_url database is in its life (drawn in docs/design.md)."""

    IN_USE = "in use"  # handed to one test, under a name no earlier test had
    RESETTING = "resetting"  # its test ended: sessions ended, renamed; the reset runs meanwhile
    READY = "ready"  # back in the template's state, waiting for the next test
    KEPT = "kept"  # left as its failed test left it, for `unmocked psql`; no longer ours to use
    DROPPED = "dropped"  # gone: the test changed what reset cannot undo, or the pool closed


HELD = (Stage.IN_USE, Stage.RESETTING, Stage.READY)
"""The stages of the databases a pool holds, which :data:`POOL_SIZE` bounds."""


@dataclass
class FreshDatabase:
    """One pg_url database, tracked by OID since a test may rename it."""

    name: str
    oid: int
    row_state: str
    """Its pg_database row (all but the name) when it was handed out."""
    stage: Stage = Stage.IN_USE
    resets: int = 0
    """How often it was put back to the template's state; 0 for the test it was cloned for."""
    resetting: ResetInside | None = None
    """Its reset, under way while :attr:`stage` is RESETTING."""
    seen_alone: bool = False
    """READY, and no session was connected to it when last looked (the session that reset it is
    gone): handed out without a look of its own."""


@dataclass(frozen=True)
class Released:
    """What :meth:`FreshPool.release` found on the server as a test ended."""

    appeared: cluster_objects.Snapshot
    """Roles, databases, settings... that appeared on the server while the test ran."""
    left: list[leaks.LeftSession]
    """The sessions the test left connected to its database (when looked for)."""


class FreshPool:
    """The pg_url databases of one process, at most :data:`POOL_SIZE` held at once.

    A reset is advanced without waiting, so the server puts one database back while the next test
    runs on another: another database is cloned when a test starts while every one is being reset,
    and from then on they take turns.
    """

    def __init__(
        self,
        admin: AdminConnection,
        admin_url: str,
        run_id: str,
        template: Callable[[], Template],
        new_name: Callable[[], str],
        clone_strategy: str | None,
        source: str | None = None,
        room_for_a_session: Callable[[AdminConnection], bool] = lambda admin: True,
        room_to_spare: Callable[[], bool] = lambda: True,
    ) -> None:
        """``source``: a database of the run to clone from as it is (carrying the reset machinery
        whenever reset is available), instead of the template plus the machinery; the pool drops
        it when it closes. See :meth:`like`. ``room_for_a_session``: whether the run may open
        the session a reset runs in (see :mod:`unmocked.connection_budget`); when not, the
        database is dropped instead. ``room_to_spare``: whether that session may still be
        open when the next test connects; when not, the reset is waited for."""
        self.room_for_a_session = room_for_a_session
        self.room_to_spare = room_to_spare
        self.admin = admin
        self.admin_url = admin_url
        self.run_id = run_id
        self._template = template
        self._new_name = new_name
        self._clone_strategy = clone_strategy
        self._databases: list[FreshDatabase] = []
        """The databases held (stages in :data:`HELD`), the one released last at the end."""
        self._kept = 0
        self._cluster_objects: cluster_objects.Snapshot | None = None
        self.expected_databases: tuple[str, ...] = ()
        """Beginnings of database names a framework makes for the run (see
        :meth:`unmocked.session.UnmockedSession.expect_databases`), never a test's doing."""
        self._source: str | None = source
        self._owns_source = source is not None
        self._source_fingerprint: str | None = None
        self.reset_unavailable = reset.why_reset_is_unavailable(admin)
        """Why databases are dropped and cloned instead of reset, or None when they are reset."""
        self._reset_mode = reset.mode_of(admin)

    def acquire(self) -> FreshDatabase:
        """A database in the template's state that no session is connected to, IN_USE.

        Also notes the server's roles, databases... for :meth:`release` to name the new ones.
        """
        self._advance_resets(wait=False)
        while (
            not self._in(Stage.READY)
            and self._in(Stage.RESETTING)
            and len(self._databases) >= POOL_SIZE
        ):
            self._advance_resets(wait=True, count=1)
        if self._cluster_objects is None:  # else as the last test of this process left them
            self._cluster_objects = cluster_objects.snapshot(self.admin)
        ready = self._in(Stage.READY)
        if ready:
            # The oldest: the session that reset it had the longest time to go.
            database = next((db for db in ready if db.seen_alone), ready[0])
            if not database.seen_alone:
                # That session may still be on its way out; the test must not meet it.
                ownership.wait_for_sessions_to_end(self.admin, database.name)
            database.stage = Stage.IN_USE
            database.seen_alone = False
            return database
        database = self._clone()
        if len(self._databases) == 1 and self.reset_unavailable is None:
            self._learn_whether_the_schema_allows_reset(database)
        return database

    def release(self, database: FreshDatabase, look_for_leaks: bool = False) -> Released:
        """Start putting ``database`` back to the template's state for a later test, or drop it.

        Says the roles, databases, settings... that appeared on the server since
        :meth:`acquire`, and with ``look_for_leaks`` the sessions the test left connected to it
        (see :mod:`unmocked.checks.leaks`; they are ended either way).
        """
        self._advance_resets(wait=False)
        appeared = self._cluster_objects_appeared()
        left: list[leaks.LeftSession] | None = None
        if self.reset_unavailable is None:
            renamed, left = self._start_reset(database, look_for_leaks)
            if renamed:
                return Released(appeared, left or [])
        if look_for_leaks and left is None:
            left = leaks.sessions_left(self.admin, database.oid)
        self._drop(database)
        return Released(appeared, left or [])

    def keep(
        self, database: FreshDatabase, test_name: str
    ) -> tuple[str | None, cluster_objects.Snapshot]:
        """Leave ``database`` as its failed test left it (KEPT), for ``unmocked psql``.

        Its comment says it is kept, so this run's end leaves it and later runs collect it only
        after :data:`unmocked.ownership.KEPT_FOR_SECONDS` (``unmocked gc`` at once). Past
        :data:`KEEP_AT_MOST` kept databases it is released instead. Returns its name (None when
        it was released), and what :meth:`release` would.
        """
        if self._kept >= KEEP_AT_MOST:
            return None, self.release(database).appeared
        self._kept += 1
        self._leave(database, Stage.KEPT)
        appeared = self._cluster_objects_appeared()
        row = self.admin.execute(
            "SELECT datname FROM pg_database WHERE oid = %s", (database.oid,)
        ).fetchone()
        if row is None:
            return database.name, appeared  # the test dropped it
        owner = Owner("kept", run=self.run_id, test=test_name, since=int(time.time()))
        ownership.record_owner(self.admin, str(row[0]), owner)
        return str(row[0]), appeared

    def reconnected(self, admin: AdminConnection, databases_may_be_gone: bool) -> None:
        """Go on with ``admin`` after a test ended the old admin session; with
        ``databases_may_be_gone`` (the run's lease was lost meanwhile, so another run's collection
        may have dropped them), forget the ready databases that are gone."""
        self.admin = admin
        if self._source_fingerprint is not None:
            templates.hold(admin, self._source_fingerprint)
        if (
            databases_may_be_gone
            and self._source is not None
            and not self._owns_source
            and ownership.owner_of(admin, self._source) is None
        ):
            # Unheld meanwhile, another run's collection took it for old: prepared anew.
            self._source = self._source_fingerprint = None
        if databases_may_be_gone:
            self._advance_resets(wait=True)  # a reset may have ended in a database now gone
        ready = self._in(Stage.READY)
        if not databases_may_be_gone or not ready:
            return
        rows = admin.execute(
            "SELECT oid FROM pg_database WHERE oid = ANY(%s)", ([db.oid for db in ready],)
        ).fetchall()
        found = {int(str(row[0])) for row in rows}
        for database in ready:
            if database.oid not in found:
                self._leave(database, Stage.DROPPED)

    def finish_resets(self) -> None:
        """Finish the resets under way, and so close their sessions (a run at its connection
        limit waits for none of its own)."""
        self._advance_resets(wait=True)

    def close(self) -> None:
        """Finish the resets under way and drop every database (and the source it owns)."""
        self._advance_resets(wait=True)
        for database in self._in(Stage.READY):
            self._drop(database)
        if self._owns_source and self._source is not None:
            ownership.drop_database(self.admin, self._source)

    def changed_since_cloned(self, name: str) -> bool:
        """Whether a committed write or a schema change reached ``name``, a database this pool
        handed out, since it was cloned; True when the pool cannot tell (no reset machinery,
        which is what records them)."""
        if self.reset_unavailable is not None:
            return True
        url = known_state.own_session_conninfo(
            with_database(self.admin_url, name), self.admin.info.server_version // 10000
        )
        with psycopg.connect(url, autocommit=True) as inside:
            row = inside.execute(reset.CHANGES).fetchone()
        return bool(row and row[0])

    def like(self, name: str, new_name: str) -> FreshPool:
        """A pool whose databases start as ``name`` (a database of this run) is now.

        ``name`` is copied, which PostgreSQL does only with no session connected to it: those of
        the caller must be closed first. The copy's reset machinery is installed anew, so that its
        databases are put back to the copy's state, not to the template's.
        """
        ownership.wait_for_sessions_to_end(self.admin, name, seconds=SESSION_END_SECONDS)
        try:
            ownership.create_database(
                self.admin, new_name, Owner("fresh", run=self.run_id), name, self._clone_strategy
            )
        except DatabaseError:
            sessions = self.admin.execute(
                "SELECT string_agg(DISTINCT coalesce(nullif(application_name, ''), 'unnamed') "
                "|| ' (pid ' || pid || ')', ', ') FROM pg_stat_activity WHERE datname = %s",
                (name,),
            ).fetchone()
            raise DatabaseError(
                f"cannot copy the database {name!r}: sessions other than unmocked's stay "
                f"connected to it ({sessions[0] if sessions else 'gone since'}) after "
                f"{SESSION_END_SECONDS} s. Close the connections the code that set it up opened."
            ) from None
        if self.reset_unavailable is None:
            reset.install_again(
                known_state.own_session_conninfo(
                    with_database(self.admin_url, new_name),
                    self.admin.info.server_version // 10000,
                ),
                self._reset_mode,
            )
        pool = FreshPool(
            self.admin,
            self.admin_url,
            self.run_id,
            self._template,
            self._new_name,
            self._clone_strategy,
            source=new_name,
            room_for_a_session=self.room_for_a_session,
            room_to_spare=self.room_to_spare,
        )
        pool.reset_unavailable = self.reset_unavailable
        pool.expected_databases = self.expected_databases
        return pool

    # -- the stages ---------------------------------------------------------------------------

    def _in(self, stage: Stage) -> list[FreshDatabase]:
        return [database for database in self._databases if database.stage is stage]

    def _clone(self) -> FreshDatabase:
        name = self._new_name()
        ownership.create_database(
            self.admin,
            name,
            Owner("fresh", run=self.run_id),
            self._clone_source(),
            self._clone_strategy,
        )
        row = self.admin.execute(
            f"SELECT oid, {_ROW_STATE} FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if row is None:
            raise DatabaseError(f"the database {name!r} vanished right after it was cloned")
        database = FreshDatabase(name, int(str(row[0])), str(row[1]))
        self._databases.append(database)
        return database

    def _start_reset(
        self, database: FreshDatabase, look_for_leaks: bool
    ) -> tuple[bool, list[leaks.LeftSession] | None]:
        """Steps 1-3 now, so that the test's URL is dead once it ended; step 4 started.

        False when the database must be dropped instead; and, with ``look_for_leaks``, the
        sessions the test left, looked for in the same round trip (None when not looked for).
        """
        if not self.room_for_a_session(self.admin):
            return False, None
        new_name = self._new_name()
        left: list[leaks.LeftSession] | None = None
        unseen = [db.oid for db in self._in(Stage.READY) if not db.seen_alone]
        for attempt in range(2):
            statements = [_end_sessions_and_rename(self.admin, database, new_name), _READ_OUTCOME]
            looks = look_for_leaks and left is None
            if looks:
                statements = [leaks.look(database.oid), *statements, leaks.READ]
            if unseen and not attempt:
                statements.append(_with_sessions(unseen))
            try:
                selected = _selected(self.admin.execute(sql.SQL("; ").join(statements)))
            except psycopg.Error:
                return False, left  # it ended no session, or the test dropped the database
            if looks:
                left = leaks.found(selected[1])
            if unseen and not attempt:
                self._note_seen_alone(selected[-1])
            if selected[0] == "renamed":
                break
            if selected[0] != "settings" or attempt:
                return False, left  # dropped, renamed or altered by the test: clone anew
            ownership.roll_back_prepared(self.admin, database.name)
            _reset_settings(self.admin, database)
        database.name = new_name
        database.stage = Stage.RESETTING
        database.resetting = ResetInside(
            known_state.own_session_conninfo(
                with_database(self.admin_url, new_name), self.admin.info.server_version // 10000
            )
        )
        self._databases.remove(database)  # resets are advanced in the order they began
        self._databases.append(database)
        # Near the run's connection limit, no reset's session may stay beside the next test's
        # connection, which the run's look could not count yet.
        self._advance_resets(wait=not self.room_to_spare())
        return True, left

    def _note_seen_alone(self, with_sessions: str | None) -> None:
        """Mark the READY databases :func:`_with_sessions` did not name as seen alone."""
        crowded = {int(oid) for oid in (with_sessions or "").split(",") if oid}
        for database in self._in(Stage.READY):
            database.seen_alone = database.seen_alone or database.oid not in crowded

    def _advance_resets(self, wait: bool, count: int | None = None) -> None:
        """Advance the resets under way, oldest first (``count`` of them to their end with
        ``wait``); a database whose reset ended is READY for a next test, or dropped."""
        for database in self._in(Stage.RESETTING)[:count]:
            assert database.resetting is not None
            try:
                outcome = database.resetting.advance(wait)
            except psycopg.OperationalError:
                outcome = False  # a test (or the server's restart) ended the reset's session
            if outcome is None:
                continue
            database.resetting = None
            if outcome:
                database.resets += 1
                database.stage = Stage.READY
            else:
                self._drop(database)

    def _leave(self, database: FreshDatabase, stage: Stage) -> None:
        """The pool no longer holds ``database``: it is KEPT or DROPPED."""
        database.stage = stage
        self._databases.remove(database)

    def _drop(self, database: FreshDatabase) -> None:
        self._leave(database, Stage.DROPPED)
        _drop(self.admin, database.oid, self.run_id)

    # -- what a database comes from -----------------------------------------------------------

    def _clone_source(self) -> str:
        """The template pg_url databases are cloned from; falls back to the plain template."""
        if self._source is None:
            template = self._template()
            self._source = template.name
            if self.reset_unavailable is None:
                try:
                    machinery = ensure_template(
                        self.admin,
                        self.admin_url,
                        reset.ResetMachinery(template, self._reset_mode),
                        self.admin.info.server_version // 10000,
                        self.run_id,
                        base=template.name,
                    )
                    self._source, self._source_fingerprint = machinery.name, machinery.fingerprint
                except (UnmockedError, psycopg.Error) as error:
                    said = error.diag.message_primary if isinstance(error, psycopg.Error) else None
                    self.reset_unavailable = (
                        f"preparing the template for reset failed: {said or error}"
                    )
        return self._source

    def _learn_whether_the_schema_allows_reset(self, database: FreshDatabase) -> None:
        """Read, once, whether the template's schema lets reset work at all.

        When it does not, every test gets a new clone, and the run's summary says why.
        """
        url = with_database(self.admin_url, database.name)
        self.reset_unavailable = reset.why_schema_cannot_be_reset(url)
        ownership.wait_for_sessions_to_end(self.admin, database.name)

    def _cluster_objects_appeared(self) -> cluster_objects.Snapshot:
        """Roles, databases, settings... new since the last look (at this test's start, or the
        last end).

        Databases named like ours are left out: other runs and xdist workers make them all the
        time; so are those a framework makes for the run (:attr:`expected_databases`).
        """
        before = self._cluster_objects or cluster_objects.Snapshot(frozenset())
        now = cluster_objects.snapshot(self.admin, self._cluster_objects)
        self._cluster_objects = now
        appeared = now.since(before)
        return cluster_objects.Snapshot(
            frozenset(
                (kind, name)
                for kind, name in appeared.objects
                if not (
                    kind == "database"
                    and name.startswith((ownership.PREFIX, *self.expected_databases))
                )
            )
        )


def _end_sessions_and_rename(
    admin: AdminConnection, database: FreshDatabase, new_name: str
) -> sql.Composed:
    body = sql.SQL(_END_SESSIONS_AND_RENAME).format(
        seconds=SESSION_END_SECONDS,
        oid=database.oid,
        name=database.name,
        new_name=new_name,
        row_state=sql.SQL(_ROW_STATE),
        state=database.row_state,
    )
    return sql.SQL("DO {}").format(sql.Literal(body.as_string(admin)))


def _with_sessions(oids: list[int]) -> sql.Composed:
    """The SELECT naming, comma-separated, those of the databases ``oids`` a session is on."""
    return sql.SQL(
        "SELECT string_agg(DISTINCT datid::text, ',') FROM pg_stat_get_activity(NULL) "
        "WHERE datid = ANY({}::oid[])"
    ).format(sql.Literal(oids))


def _selected(cursor: psycopg.Cursor[tuple[object, ...]]) -> list[str | None]:
    """The first value of each SELECT among the statements ``cursor`` ran, in order."""
    values: list[str | None] = []
    while True:
        if cursor.description is not None:
            row = cursor.fetchone()
            values.append(None if row is None or row[0] is None else str(row[0]))
        if not cursor.nextset():
            return values


def _reset_settings(admin: AdminConnection, database: FreshDatabase) -> None:
    """Undo ``ALTER DATABASE ... SET`` and ``ALTER ROLE ... IN DATABASE ... SET``."""
    roles = admin.execute(
        "SELECT setrole::regrole::text FROM pg_db_role_setting "
        "WHERE setdatabase = %s AND setrole <> 0",
        (database.oid,),
    ).fetchall()
    name = sql.Identifier(database.name)
    admin.execute(sql.SQL("ALTER DATABASE {} RESET ALL").format(name))
    for (role,) in roles:
        admin.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(sql.SQL(str(role)), name)
        )


def _drop(admin: AdminConnection, oid: int, run_id: str) -> None:
    """Drop a database of ours, by OID: also when the test renamed it or rewrote its comment.

    (A test that renamed it to a name without our prefix keeps it: unmocked drops only databases
    whose name says they are its own.)
    """
    row = admin.execute("SELECT datname FROM pg_database WHERE oid = %s", (oid,)).fetchone()
    if row is None:
        return
    name = str(row[0])
    if name.startswith(ownership.PREFIX) and ownership.owner_of(admin, name) is None:
        ownership.record_owner(admin, name, Owner("fresh", run=run_id))
    ownership.drop_database(admin, name)
