"""One test run's use of unmocked: a server, its template, and the databases cut from it.

The hub: it orchestrates the modules that do the work and counts what tests used into a
:class:`~unmocked.report.Tally`. In the order things happen:

1. the server is found or started on first use (:mod:`unmocked.servers`), and the run takes its
   lease and collects what dead runs left (:mod:`unmocked.ownership`);
2. the template is built or reused by fingerprint (:mod:`unmocked.templates`);
3. tests get databases through context managers that count and clean up: :meth:`rolled_back`
   (and its async and driver twins) for rollback isolation (:mod:`unmocked.isolation`),
   :meth:`fresh_database` for a database of the test's own (:mod:`unmocked.fresh`);
4. :meth:`close` drops the databases this session created and stops a server it started.

What a test can do to unmocked itself is watched for on the way: a test that ends unmocked's own
sessions (``pg_terminate_backend``) has them opened again, the lease first, and is named in a
warning (:meth:`notice_lost_sessions`, :mod:`unmocked.ended_sessions`); a server that died is said
once, in one paragraph with its log's last lines, and every later request for a database fails at
once, in one line (:mod:`unmocked.dead_server`).

Under pytest-xdist each worker has its own session attached to the server the controller started
(``attach_to``), so the workers share one server and one template but never a database.
"""

from __future__ import annotations

import functools
import itertools
import time
import warnings
import weakref
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from unmocked import cluster_objects, migrations, ownership, report, roles, templates
from unmocked.checks import leaks
from unmocked.connection_budget import ConnectionBudget
from unmocked.dead_server import DeathNotice
from unmocked.ended_sessions import EndedSessions
from unmocked.errors import ConfigurationError, ServerError, UnmockedError, UnmockedWarning
from unmocked.fresh import FreshDatabase, FreshPool
from unmocked.isolation import (
    AsyncRollbackConnection,
    OuterTransactionLost,
    OutsideSession,
    RollbackConnection,
    UnitOfWork,
)
from unmocked.ownership import AdminConnection, Owner
from unmocked.resources import Closeable
from unmocked.servers import RunningServer, Server, start
from unmocked.settings import Settings
from unmocked.templates import Template, clone_strategy, ensure_template
from unmocked.timings import measured
from unmocked.urls import with_database

C = TypeVar("C", bound=UnitOfWork)
T = TypeVar("T")

# How a rollback test's writes escaped its outer transaction, for the warning that names it.
_ESCAPED = (
    "ended unmocked's outer transaction itself (a raw COMMIT or ROLLBACK statement), so its "
    "writes may have been committed"
)
_COMMITTED = (
    "committed changes to the rollback database from a connection of its own (one opened from "
    "pg.info, by a thread or a pool of the code under test), which no rollback undoes"
)
_STILL_CONNECTED = (
    "left a connection of its own to the rollback database (opened from pg.info, by a "
    "thread or a pool of the code under test), which may commit changes no rollback undoes"
)


def _escaped_by(outside: OutsideSession) -> str:
    return _STILL_CONNECTED if outside.still_connected else _COMMITTED


class KeptConnection(Protocol):
    """A connection to the rollback database that a driver's integration keeps between tests
    (asyncpg's, one per event loop): unmocked's own, so the end of a test does not take it for an
    outside session, counted by the connection budget, and ended before its database is dropped."""

    in_test: bool

    @property
    def backend_pid(self) -> int | None: ...

    def usable(self, url: str) -> bool: ...

    def terminate(self) -> None: ...


class UnmockedSession(Closeable):
    """Server, template and databases for one process; a context manager."""

    def __init__(
        self,
        settings: Settings,
        attach_to: Server | Callable[[], Server | None] | None = None,
        run_group: str | None = None,
    ) -> None:
        """``attach_to``: the server to use instead of starting one, or a function that says it
        on first use (an xdist worker's, known only once the controller has answered; None from
        it: start one as usual). ``run_group``: the run id of the whole run this process is part
        of (an xdist worker's controller's), whose connections ``unmocked_max_connections``
        counts together; None: this process's own."""
        self.settings = settings
        self.run_id = ownership.new_run_id()
        self.budget = ConnectionBudget(
            run_group or self.run_id, settings.max_connections, settings.connection_wait
        )
        self.tally = report.Tally()
        self._attach_to = attach_to
        self._running: RunningServer | None = None
        self._admin: AdminConnection | None = None
        self._lease: ownership.Lease | None = None
        self._template: Template | None = None
        self._template_error: Exception | None = None
        self._source: migrations.MigrationSource | None = None
        self._rollback_database: str | None = None
        self._rollback_connections: dict[type[UnitOfWork], UnitOfWork] = {}
        self._kept_by_drivers: weakref.WeakSet[KeptConnection] = weakref.WeakSet()
        """Held by their fixtures, which close them; weak, so that closed ones go with them."""
        self._names = itertools.count(1)
        self._login: roles.LoginRole | None = None
        """The login role tests' sessions use under ``unmocked_role`` (made on first use)."""
        self._fresh_pool: FreshPool | None = None
        self._pools_like: dict[str, FreshPool] = {}
        """Pools whose databases start as another database of the run was (:meth:`fresh_like`)."""
        self._death = DeathNotice(self._died, self._describe_server)
        self._ended_sessions = EndedSessions()

    def __repr__(self) -> str:
        """The run and its server in words, without URLs: pytest prints it for a failed test."""
        server = self._running.server.describe() if self._running else "no server yet"
        return f"<UnmockedSession run {self.run_id}: {server}>"

    # -- the server ---------------------------------------------------------------------------

    @property
    def server(self) -> Server:
        """The running server, found or started on first use."""
        return self._running_server().server

    def _running_server(self) -> RunningServer:
        if self._running is None:
            attach_to = self._attach_to() if callable(self._attach_to) else self._attach_to
            self._running = RunningServer(attach_to) if attach_to else start(self.settings)
            self.tally.phases.merge(self._running.phases)
        return self._running

    @property
    def restored(self) -> tuple[str, ...]:
        """What tests had left on the server that its start put back, as the statements that
        made it (see :func:`unmocked.servers.known_state.restore`); starts the server."""
        return self._running_server().restored

    @property
    def admin(self) -> AdminConnection:
        """An autocommit connection to the server's maintenance database.

        Opening it (on first use) also takes this run's lease and then drops the databases of runs
        that are no longer alive (:func:`unmocked.ownership.collect_abandoned`).
        """
        if self._admin is None:
            self._admin = self._lease_and_collect_abandoned()
        return self._admin

    def _lease_and_collect_abandoned(self) -> AdminConnection:
        server = self.server
        # The admin session holds the lease (deaf to the settings tests leave on the server: see
        # unmocked.servers.known_state).
        self._lease = self.budget.connecting(
            lambda: ownership.Lease(server.url, self.run_id, server.major, self.budget.lock),
            "the run's admin session",
        )
        ownership.collect_abandoned(self._lease.conn)
        return self._lease.conn

    # -- the template -------------------------------------------------------------------------

    def use_migrations(self, source: migrations.MigrationSource) -> None:
        """Build the template from ``source`` instead of the ``unmocked_migrations`` setting.

        For frameworks that own the schema (Django's ``migrate``). Call it before any database is
        asked for: every database is cut from the one template, so it cannot change afterwards.
        """
        if self._template is not None or self._template_error is not None:
            raise ConfigurationError(
                f"cannot build the template from {source.describe()}: it was already built from "
                f"{self.settings.migrations or 'no migrations'!r}. Choose the source before the "
                "first database is asked for."
            )
        self._source = source

    def template(self) -> Template:
        """The migrated template, built once per fingerprint; a failure is kept and re-raised."""
        if self._template_error is not None:
            raise self._template_error
        if self._template is None:
            source: migrations.MigrationSource | None = None
            try:
                source = migrations.from_settings(self.settings, self._source)
                self._template = ensure_template(
                    self.admin,
                    self.server.url,
                    source,
                    self.server.major,
                    self.run_id,
                    timeout=self.settings.build_timeout,
                )
            except Exception as error:
                # A build the server's death broke is no fault of the migrations.
                built_from = source.describe() if source else "the migrations"
                death = self._death.check(f"the template's build from {built_from}")
                self._template_error = death or error
                if death is not None:
                    raise death from None
                raise
            self.tally.note_template(self._template)
        return self._template

    # -- databases ----------------------------------------------------------------------------

    @functools.cached_property
    def _clone_strategy(self) -> str | None:
        return clone_strategy(self.admin)

    def clone_database(self, kind: str) -> str:
        """Name of a new database cloned from the template, for the caller to drop with
        :meth:`drop_database` (the rollback database; ``unmocked run``'s for a whole command)."""
        with self._death.guard(f"the clone of a {kind} database"), self.tally.database_time():
            name = ownership.run_database_name(self.run_id, kind, next(self._names))
            ownership.create_database(
                self.admin,
                name,
                Owner(kind, run=self.run_id),
                self.template().name,
                self._clone_strategy,
            )
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database :meth:`clone_database` made."""
        with self._death.guard(f"the drop of {name}"), self.tally.database_time():
            ownership.drop_database(self.admin, name)

    @property
    def _fresh(self) -> FreshPool:
        if self._fresh_pool is None:
            self._fresh_pool = FreshPool(
                self.admin,
                self.server.url,
                self.run_id,
                self.template,
                lambda: ownership.run_database_name(self.run_id, "fresh", next(self._names)),
                self._clone_strategy,
                room_for_a_session=self.budget.has_room,
                room_to_spare=self.budget.room_to_spare,
            )
        return self._fresh_pool

    def _pools(self) -> list[FreshPool]:
        return [pool for pool in (self._fresh_pool, *self._pools_like.values()) if pool is not None]

    def fresh_like(self, url: str) -> str | None:
        """Let :meth:`fresh_database` hand out databases in the state that ``url``'s database (one
        it handed out, with no session connected now) is in: the ``like`` to pass it, or None when
        nothing was committed to that database since its clone (the template's state serves).

        For a framework that prepares its database in steps of its own after the clone, as a
        suite's own ``django_db_setup`` does: copied once, reset between tests like the others.
        """
        name = str(conninfo_to_dict(url)["dbname"])
        with self._death.guard(f"the copy of {name}"), self.tally.database_time():
            if name not in self._pools_like:
                if not self._fresh.changed_since_cloned(name):
                    return None
                new_name = ownership.run_database_name(self.run_id, "like", next(self._names))
                self._pools_like[name] = self._fresh.like(name, new_name)
        return name

    @contextmanager
    def fresh_database(
        self,
        test_name: str = "",
        keep_if: Callable[[], bool] = lambda: False,
        like: str | None = None,
        report_leaks: bool = False,
    ) -> Iterator[str]:
        """Yield the URL of a database in the template's state that no other test sees (in the
        state of the database ``like`` names, with ``like`` from :meth:`fresh_like`).

        Afterwards the database is put back to the template's state for a later test under a new
        name (or dropped, see :mod:`unmocked.fresh`), unless ``keep_if()`` is true then (a failed
        test): the database then stays for ``unmocked psql`` after the run (at most
        :data:`~unmocked.fresh.pool.KEEP_AT_MOST` per process), until ``unmocked gc`` or a run a
        day later drops it. Roles, databases, tablespaces and settings the test left on the whole
        server cannot be undone inside a database: a warning names them.

        With ``report_leaks`` (``pg_url``'s), the connections the test left open to the database
        are named as the ``unmocked_leaks`` setting says: in a warning, or in a
        :class:`~unmocked.errors.LeakError` raised once the database is released or kept (see
        :mod:`unmocked.checks.leaks`); they are ended either way.
        """
        took: list[float] = []

        def acquire() -> tuple[FreshPool, FreshDatabase]:
            pool = self._fresh if like is None else self._pools_like[like]
            self._wait_for_a_connection(test_name)
            with self.tally.database_time(), measured(took.append):
                return pool, pool.acquire()

        with self._death.guard(test_name):
            fresh, database = self._at_start_of(test_name, acquire)
        if database.resets:
            self.tally.fresh_reset += 1
        else:
            self.tally.fresh_cloned += 1
            self.tally.phases.record("clone", took[-1])
        self.tally.reset_unavailable = fresh.reset_unavailable
        try:
            yield self.as_tests_role(with_database(self.server.url, database.name))
        finally:
            left: list[leaks.LeftSession] = []
            look_for_leaks = report_leaks and self.settings.leaks != "off"
            with self._death.guard(test_name), self.tally.database_time():
                self._reopen_lost_sessions()  # the test may have ended them
                if keep_if():
                    if look_for_leaks:
                        left = leaks.sessions_left(self.admin, database.oid)
                    leaks.end(self.admin, left)  # a released database's go with the others
                    kept, appeared = fresh.keep(database, test_name)
                    if kept is None:
                        self.tally.kept_discarded += 1
                    else:
                        self.tally.kept[kept] = test_name
                else:
                    with self.tally.phases.measure("release"):
                        released = fresh.release(database, look_for_leaks)
                    appeared, left = released.appeared, released.left
            self._warn_of_cluster_objects(appeared, test_name)
            self._ended_sessions.tell(test_name)
            if left:  # last: under -W error the warning raises, and the database is done by then
                leaks.report(left, test_name, fail=self.settings.leaks == "fail")

    def expect_databases(self, beginnings: Collection[str]) -> None:
        """Databases whose names begin so are made for the run by a framework (Django's
        ``test_<NAME>`` for aliases unmocked does not serve, in every xdist worker), not by a test:
        the warning on databases that appear on the server while a test runs leaves them out."""
        self._fresh.expected_databases = tuple(
            sorted({*self._fresh.expected_databases, *beginnings})
        )

    def _warn_of_cluster_objects(self, appeared: cluster_objects.Snapshot, test_name: str) -> None:
        objects = appeared.without("setting").described()
        if objects:
            warnings.warn(
                f"{', '.join(objects)} appeared on the server while "
                f"{test_name or 'a test'} ran. Objects of the whole server cannot be isolated "
                "per database, and unmocked does not drop them (it cannot tell they are this "
                "test's: another run or xdist worker may have made them); drop them in the test, "
                "or later tests see them.",
                UnmockedWarning,
                stacklevel=3,
            )
        settings = sorted(appeared.named("setting"))
        if settings:
            if self.server.provider == "url":
                later = (
                    "unmocked does not undo them on a server given by URL, so later runs get "
                    "them too"
                )
            else:
                later = "unmocked puts the server back when it next starts it"
            warnings.warn(
                f"{test_name or 'a test'} changed settings of the whole server: "
                f"{'; '.join(settings)}. Every new session takes them, those of the later tests "
                f"of this run too (unmocked's own sessions ignore them); {later}. Undo them in "
                "the test (ALTER ... RESET), or use SET, which lasts for its session only.",
                UnmockedWarning,
                stacklevel=3,
            )

    def as_tests_role(self, url: str) -> str:
        """``url`` logging in as the role tests run as: ``unmocked_role``'s login for the run
        (see :mod:`unmocked.roles`), made on first use; ``url`` itself without the setting."""
        login = self._tests_login()
        return url if login is None else login.url(url)

    def _tests_login(self) -> roles.LoginRole | None:
        """``unmocked_role``'s login role for this process, made on first use; None without the
        setting."""
        if self.settings.role and self._login is None:
            self._login = roles.login_as(
                self.admin,
                self.settings.role,
                f"{ownership.PREFIX}{self.run_id}_{next(self._names)}_role",
                self.run_id,
                self._describe_server(),
            )
        return self._login

    def rollback_database_url(self) -> str:
        """URL of the database rollback tests share in this process (cloned on first use)."""
        if self._rollback_database is None:
            self._rollback_database = self.clone_database("rollback")
        return with_database(self.server.url, self._rollback_database)

    @contextmanager
    def rolled_back(self, test_name: str = "") -> Iterator[RollbackConnection]:
        """Yield the shared connection inside an outer transaction that is rolled back after."""
        with self._rolled_back(RollbackConnection, test_name) as conn:
            yield conn

    @contextmanager
    def async_rolled_back(self, test_name: str = "") -> Iterator[AsyncRollbackConnection]:
        """As :meth:`rolled_back`, with a psycopg ``AsyncConnection`` for the test to await on.

        Begun and ended with blocking calls, so it works outside of an event loop and one
        connection serves every test's loop.
        """
        with self._rolled_back(AsyncRollbackConnection, test_name) as conn:
            yield conn

    @contextmanager
    def rolled_back_by_driver(
        self, test_name: str = "", kept: KeptConnection | None = None
    ) -> Iterator[str]:
        """Yield the rollback database's URL, for a driver unmocked does not drive (asyncpg).

        The driver's own connection must run the test inside a transaction that it rolls back
        afterwards, and raise :class:`~unmocked.isolation.OuterTransactionLost` out of the block
        when the test ended that transaction itself, :class:`~unmocked.isolation.OutsideSession`
        when another session (not one of :meth:`own_backend_pids`) used the database: it is then
        rebuilt, as after a raw ``COMMIT`` on :meth:`rolled_back`'s connection. ``kept``: the
        connection the driver keeps between tests, which counts as unmocked's own from now on.
        """
        with self._death.guard(test_name):
            url = self.as_tests_role(self.rollback_database_url())
            if kept is None or not kept.usable(url):
                self._wait_for_a_connection(test_name)  # the driver's, for the test
        if kept is not None:
            self._kept_by_drivers.add(kept)
        self.tally.rollback_tests += 1
        try:
            yield url
        except OuterTransactionLost:
            with self._death.guard(test_name):
                self.discard_rollback_database(test_name)
        except OutsideSession as outside:
            with self._death.guard(test_name):
                self.discard_rollback_database(test_name, _escaped_by(outside))

    @contextmanager
    def rolled_back_by_framework(self) -> Iterator[None]:
        """Count a rollback test whose transaction a framework runs on its own database (Django's
        ``TestCase`` atomic blocks on the database :mod:`unmocked.integrations.django` serves)."""
        self.tally.rollback_tests += 1
        yield

    def _rollback_connection(self, kind: type[C]) -> C:
        conn = self._rollback_connections.get(kind)
        if isinstance(conn, kind) and not conn.broken and not ownership.session_ended(conn.pgconn):
            return conn
        if conn is not None:
            conn.disconnect()  # a test (or a restart of the server) ended its session
        url = self.as_tests_role(self.rollback_database_url())
        try:
            conn = self.budget.connecting(
                lambda: kind.open(url), "the rollback connection", self.admin
            )
        except psycopg.OperationalError:
            database = self._rollback_database
            if database is None or ownership.owner_of(self.admin, database) is not None:
                raise
            # Another run's collection dropped it while a test had ended this run's lease.
            self._rollback_database = None
            self._disconnect_rollback_connections()
            conn = kind.open(self.as_tests_role(self.rollback_database_url()))
        self._rollback_connections[kind] = conn
        return conn

    @contextmanager
    def _rolled_back(self, kind: type[C], test_name: str) -> Iterator[C]:
        def begin() -> C:
            self._wait_for_a_connection(test_name)
            conn = self._rollback_connection(kind)
            conn.begin_test()
            return conn

        with self._death.guard(test_name):
            conn = self._at_start_of(test_name, begin)
        self.tally.rollback_tests += 1
        try:
            yield conn
        finally:
            with self._death.guard(test_name):
                self._end_rollback_test(conn, test_name)
                self._reopen_lost_sessions()
            self._ended_sessions.tell(test_name)

    def own_backend_pids(self) -> list[int]:
        """The backends of unmocked's connections to the rollback database: the rollback
        connections and those drivers keep, which the end of a test does not take for outside
        sessions."""
        pids = [c.info.backend_pid for c in self._rollback_connections.values() if not c.closed]
        return pids + [k.backend_pid for k in self._kept_by_drivers if k.backend_pid is not None]

    def _end_rollback_test(self, conn: UnitOfWork, test_name: str) -> None:
        try:
            conn.end_test(own_pids=self.own_backend_pids())
            return
        except OuterTransactionLost:
            escaped: str | None = _ESCAPED
        except OutsideSession as outside:
            escaped = _escaped_by(outside)
        except psycopg.Error:
            if self._death.check(test_name) is not None:
                raise
            # The test closed or broke the connection; the server rolled its transaction back.
            escaped = None
        conn.disconnect()
        del self._rollback_connections[type(conn)]
        if escaped:
            self.discard_rollback_database(test_name, escaped)

    def _wait_for_a_connection(self, test_name: str) -> None:
        """Return once the run may hold one more connection (see
        :mod:`unmocked.connection_budget`); first the resets under way give theirs back."""
        self.budget.wait_for_room(self.admin, test_name, self._free_own_connections)

    def _free_own_connections(self) -> None:
        """Give back what the run holds and no test uses: resets under way, kept connections."""
        for pool in self._pools():
            pool.finish_resets()
        for kept in list(self._kept_by_drivers):
            if not kept.in_test:
                kept.terminate()

    def discard_rollback_database(self, test_name: str, how: str | None = None) -> None:
        """Drop the rollback database after ``test_name`` ended its outer transaction itself.

        Its writes may have been committed, so no other test may see that database: the next
        rollback test gets a new clone. Warns, naming the test and ``how`` its writes escaped
        (a raw ``COMMIT`` when not given).
        """
        self.tally.rebuilt_after_escape.append(test_name)
        self._disconnect_rollback_connections()
        self._reopen_lost_sessions()  # the same test may have ended the admin session
        if self._rollback_database is not None:
            self.drop_database(self._rollback_database)
            self._rollback_database = None
        # Last: under -W error the warning raises, and the database must be gone by then.
        warnings.warn(
            f"{test_name or 'a test'} {how or _ESCAPED}. unmocked rebuilt the database so no "
            "other test sees them; use the pg_url fixture for tests that must really commit, "
            "or from several connections.",
            UnmockedWarning,
            stacklevel=2,
        )

    def _disconnect_rollback_connections(self) -> None:
        for conn in self._rollback_connections.values():
            conn.disconnect()
        self._rollback_connections.clear()
        for kept in list(self._kept_by_drivers):
            kept.terminate()

    # -- reporting ----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once a server was found or started for this session."""
        return self._running is not None

    def ready(self, template: bool = True) -> str:
        """Get the server (and with ``template`` the template) now; the header line saying so.

        For the plugin, which prepares before the first test so that the run's header can say so.
        ``template=False`` when the migrations are chosen later (Django's, by a session fixture).
        """
        started = time.perf_counter()
        server = self.server
        built = self.template() if template else None
        if built is not None:
            self._tests_login()  # a role the migrations did not make stops the run now
        return report.header(server, built, time.perf_counter() - started)

    def summary(self, verbose: bool = False) -> list[str]:
        """The lines for the end of a run (see :func:`unmocked.report.summary`)."""
        return report.summary(self.server, self.tally, verbose)

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Drop this session's databases, release its lease, stop a server it started.

        Also after a test ended unmocked's sessions (they are opened again, quietly) or the server
        died (nothing is left to drop): the server is stopped and its slot freed either way.
        """
        try:
            self._disconnect_rollback_connections()
            if self._admin is not None and not self._death.known:
                try:
                    self._reopen_lost_sessions()
                    self._ended_sessions.forget()  # nobody to tell at the end of the run
                    for pool in reversed(self._pools()):  # a copy's pool before the original's
                        pool.close()
                    if self._rollback_database is not None:
                        self.drop_database(self._rollback_database)
                    if self._login is not None:
                        roles.drop_login(self.admin, self.server.url, self._login)
                except (psycopg.Error, UnmockedError):
                    if self._death.check() is None:
                        raise
        finally:
            self._fresh_pool = None
            self._pools_like.clear()
            self._rollback_database = None
            self._login = None
            for owned in (self._lease, self._running):  # the lease's session is the admin's
                if owned is not None:
                    owned.close()
            self._admin = self._lease = self._running = None

    # -- unmocked's own sessions: ended by a test, or by the server's death ---------------------

    def notice_lost_sessions(self, test_name: str = "") -> None:
        """Open again the admin session (which holds the lease) if ``test_name`` ended it, and
        warn, naming it; raise the server's death instead, if that is what ended it.

        A look at its socket, no round trip: the plugin does it after every test, and the
        database fixtures before they use a session. Silent once the server is known dead: the
        database fixtures say that.
        """
        if self._death.known:
            return
        with self._death.guard(test_name):
            self._reopen_lost_sessions()
        self._ended_sessions.tell(test_name)

    def _at_start_of(self, test_name: str, work: Callable[[], T]) -> T:
        """``work()``, which uses unmocked's sessions as ``test_name`` starts, after opening again
        those an earlier test ended.

        ``pg_terminate_backend`` returns before the session it ends is gone, so the look at the
        socket may find nothing yet, and ``work`` then meets the end itself (``terminating
        connection due to administrator command``): it is done once more, on sessions opened again.
        """
        ended_by = self._ended_sessions.test_before(test_name)
        self._reopen_lost_sessions(ended_by=ended_by)
        try:
            return work()
        except psycopg.OperationalError:
            if self._admin is None or not ownership.session_ended(self._admin.pgconn):
                raise
        self._reopen_lost_sessions(ended_by=ended_by)
        return work()

    def _reopen_lost_sessions(self, ended_by: str | None = None) -> None:
        """Open the admin session again, with the lease, if a test ended it, and note it (with
        ``ended_by`` when that was not the test at hand) for the warning that comes once the
        test's databases are done (:class:`~unmocked.ended_sessions.EndedSessions`)."""
        if self._admin is None or self._lease is None or self._death.known:
            return
        if not self._lease.lost():
            return
        if self._running is not None and self._running.died() is not None:
            # The guard around every database request tells it once, in full.
            raise ServerError("the server died")
        # At once: until the lease is held again other runs' collections take this run for dead.
        self.budget.connecting(self._lease.renew, "the run's admin session")
        self._admin = self._lease.conn
        if self._template is not None:
            templates.hold(self._admin, self._template.fingerprint)
            if ownership.owner_of(self._admin, self._template.name) is None:
                # Unheld meanwhile, another run's collection took it for old: built again.
                self._template = None
        for pool in self._pools():
            pool.reconnected(self._admin, databases_may_be_gone=True)
        self._ended_sessions.note(ended_by=ended_by)

    def _died(self) -> str | None:
        return self._running.died() if self._running is not None else None

    def _describe_server(self) -> str:
        return self._running.server.describe() if self._running else "the server"
