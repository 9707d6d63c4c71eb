"""One test run's use of unmocked: a server, its template, and the databases cut from it.

Everything is created on first use and released by :meth:`UnmockedSession.close`: databases this
session created are dropped, a server it started is stopped. Under pytest-xdist each worker has its
own session attached to the server the controller started (``attach_to``), so the workers share
one server and one template but never a database.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg

from unmocked import migrations, ownership
from unmocked.databases import FreshDatabase, FreshDatabases
from unmocked.errors import ConfigurationError
from unmocked.isolation import (
    AsyncRollbackConnection,
    OuterTransactionLost,
    RollbackConnection,
    UnitOfWork,
)
from unmocked.ownership import AdminConnection, Owner
from unmocked.resources import Closeable
from unmocked.servers import RunningServer, Server, start
from unmocked.settings import Settings
from unmocked.templates import Template, clone_strategy, ensure_template
from unmocked.timings import Phases
from unmocked.urls import with_database

C = TypeVar("C", bound=UnitOfWork)

# Databases kept for failed tests per process: enough to look into, not a server full of copies.
KEEP_AT_MOST = 5


@dataclass
class Counters:
    """What the session did, for the one-line summary; xdist workers' counters are merged."""

    rollback_tests: int = 0
    fresh_databases: int = 0
    """Tests that used pg_url: each got a database either reset after an earlier test or cloned."""
    fresh_reset: int = 0
    fresh_cloned: int = 0
    reset_unavailable: str | None = None
    """Why pg_url databases were cloned for every test instead of reset, when they were."""
    kept: dict[str, str] = field(default_factory=dict)
    """Databases kept for failed tests: name -> test."""
    kept_discarded: int = 0
    """Failed tests whose database was not kept, past :data:`KEEP_AT_MOST`."""
    database_seconds: float = 0.0
    rebuilt_after_escape: list[str] = field(default_factory=list)
    template_fingerprint: str | None = None
    template_build_seconds: float | None = None
    """None while the template was only reused."""
    phases: Phases = field(default_factory=Phases)
    """Time per phase (start, migrate, clone...), shown by ``pytest -v``."""

    def note_template(self, template: Template) -> None:
        self.template_fingerprint = template.fingerprint
        if not template.reused:
            self.template_build_seconds = template.seconds

    def merge(self, other: Counters) -> None:
        """Add another process's counters (an xdist worker's) to these."""
        self.rollback_tests += other.rollback_tests
        self.fresh_databases += other.fresh_databases
        self.fresh_reset += other.fresh_reset
        self.fresh_cloned += other.fresh_cloned
        self.reset_unavailable = self.reset_unavailable or other.reset_unavailable
        self.kept.update(other.kept)
        self.kept_discarded += other.kept_discarded
        self.database_seconds += other.database_seconds
        self.rebuilt_after_escape += other.rebuilt_after_escape
        self.template_fingerprint = self.template_fingerprint or other.template_fingerprint
        if other.template_build_seconds is not None:
            self.template_build_seconds = other.template_build_seconds
        self.phases.merge(other.phases)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Counters:
        fields = json.loads(text)
        fields["phases"] = Phases(**fields["phases"])
        return cls(**fields)


class UnmockedSession(Closeable):
    """Server, template and databases for one process; a context manager."""

    def __init__(self, settings: Settings, attach_to: Server | None = None) -> None:
        self.settings = settings
        self.run_id = ownership.new_run_id()
        self.counters = Counters()
        self._attach_to = attach_to
        self._running: RunningServer | None = None
        self._admin: AdminConnection | None = None
        self._lease: ownership.Lease | None = None
        self._template: Template | None = None
        self._template_error: Exception | None = None
        self._source: migrations.MigrationSource | None = None
        self._rollback_database: str | None = None
        self._rollback_connections: dict[type[UnitOfWork], UnitOfWork] = {}
        self._names = itertools.count(1)
        self._fresh_databases: FreshDatabases | None = None
        self._to_keep: set[str] = set()

    # -- the server ---------------------------------------------------------------------------

    @property
    def server(self) -> Server:
        """The running server, found or started on first use."""
        if self._running is None:
            self._running = (
                RunningServer(self._attach_to) if self._attach_to else start(self.settings)
            )
            self.counters.phases.merge(self._running.phases)
        return self._running.server

    @property
    def admin(self) -> AdminConnection:
        """An autocommit connection to the server's maintenance database; holds the run's lease."""
        if self._admin is None:
            url = self.server.url
            self._lease = ownership.Lease(url, self.run_id)
            self._admin = psycopg.connect(url, autocommit=True)
            ownership.collect_abandoned(self._admin)
        return self._admin

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
            source = migrations.from_settings(self.settings, self._source)
            try:
                self._template = ensure_template(
                    self.admin, self.server.url, source, self.server.major, self.run_id
                )
                self.counters.note_template(self._template)
                if not self._template.reused:
                    self.counters.phases.record("migrate", self._template.seconds)
            except Exception as error:
                self._template_error = error
                raise
        return self._template

    # -- databases ----------------------------------------------------------------------------

    @functools.cached_property
    def _clone_strategy(self) -> str | None:
        return clone_strategy(self.admin)

    def clone_database(self, kind: str) -> str:
        """Name of a new database cloned from the template, for the caller to drop with
        :meth:`drop_database` (the rollback database; ``unmocked run``'s for a whole command)."""
        started = time.perf_counter()
        name = f"{ownership.PREFIX}{self.run_id}_{kind}_{next(self._names)}"
        ownership.create_database(
            self.admin,
            name,
            Owner(kind, run=self.run_id),
            self.template().name,
            self._clone_strategy,
        )
        self.counters.database_seconds += time.perf_counter() - started
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database :meth:`clone_database` made."""
        started = time.perf_counter()
        ownership.drop_database(self.admin, name)
        self.counters.database_seconds += time.perf_counter() - started

    @property
    def _fresh(self) -> FreshDatabases:
        if self._fresh_databases is None:
            self._fresh_databases = FreshDatabases(
                self.admin,
                self.server.url,
                self.run_id,
                self.template,
                lambda: f"{ownership.PREFIX}{self.run_id}_fresh_{next(self._names)}",
            )
        return self._fresh_databases

    @contextmanager
    def fresh_database(self, test_name: str = "") -> Iterator[str]:
        """Yield the URL of a database in the template's state that no other test sees.

        Afterwards the database is put back to the template's state for a later test under a new
        name (or dropped, see :mod:`unmocked.databases`), unless :meth:`keep_fresh_database` was
        called for it. Roles, databases and tablespaces the test left on the server cannot be
        undone inside a database: a warning names them.
        """
        started = time.perf_counter()
        fresh = self._fresh
        database = fresh.acquire()
        if database.cloned:
            self.counters.phases.record("clone", time.perf_counter() - started)
        self.counters.fresh_databases += 1
        self.counters.fresh_cloned += database.cloned
        self.counters.fresh_reset += not database.cloned
        self.counters.reset_unavailable = fresh.reset_unavailable
        self.counters.database_seconds += time.perf_counter() - started
        url = with_database(self.server.url, database.name)
        try:
            yield url
        finally:
            started = time.perf_counter()
            if url in self._to_keep:
                self._to_keep.discard(url)
                appeared = self._keep_or_release(database, test_name)
            else:
                with self.counters.phases.measure("reset"):
                    appeared = fresh.release(database)
            self._warn_of_cluster_objects(appeared, test_name)
            self.counters.database_seconds += time.perf_counter() - started

    def keep_fresh_database(self, url: str) -> None:
        """Keep the database at ``url`` (from :meth:`fresh_database`) as it is when its test ends.

        For failed tests: the database stays for ``unmocked psql`` after the run (at most
        :data:`KEEP_AT_MOST` per process), until ``unmocked gc`` or a run a day later drops it.
        """
        self._to_keep.add(url)

    def _keep_or_release(self, database: FreshDatabase, test_name: str) -> set[str]:
        if len(self.counters.kept) < KEEP_AT_MOST:
            name, appeared = self._fresh.keep(database, test_name)
            self.counters.kept[name] = test_name
            return appeared
        self.counters.kept_discarded += 1
        return self._fresh.release(database)

    def _warn_of_cluster_objects(self, appeared: set[str], test_name: str) -> None:
        if appeared:
            warnings.warn(
                f"{', '.join(sorted(appeared))} appeared on the server while "
                f"{test_name or 'a test'} ran. Objects of the whole server cannot be isolated "
                "per database, and unmocked does not drop them (it cannot tell they are this "
                "test's: another run or xdist worker may have made them); drop them in the test, "
                "or later tests see them.",
                stacklevel=3,
            )

    def rollback_database_url(self) -> str:
        """URL of the database rollback tests share in this process (cloned on first use).

        For drivers unmocked does not drive itself (asyncpg): their own connection to it must run
        each test inside a transaction that is rolled back afterwards.
        """
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

    def _rollback_connection(self, kind: type[C]) -> C:
        url = self.rollback_database_url()
        conn = self._rollback_connections.get(kind)
        if not isinstance(conn, kind) or conn.closed or conn.broken:
            conn = self._rollback_connections[kind] = kind.open(url)
        return conn

    @contextmanager
    def _rolled_back(self, kind: type[C], test_name: str) -> Iterator[C]:
        conn = self._rollback_connection(kind)
        conn.begin_test()
        self.counters.rollback_tests += 1
        try:
            yield conn
        finally:
            self._end_rollback_test(conn, test_name)

    def _end_rollback_test(self, conn: UnitOfWork, test_name: str) -> None:
        try:
            conn.end_test()
            return
        except OuterTransactionLost:
            escaped = True
        except psycopg.Error:
            # The test closed or broke the connection; the server rolled its transaction back.
            escaped = False
        conn.disconnect()
        del self._rollback_connections[type(conn)]
        if escaped:
            self.discard_rollback_database(test_name)

    def discard_rollback_database(self, test_name: str) -> None:
        """Drop the rollback database after ``test_name`` ended its outer transaction itself.

        Its writes may have been committed, so no other test may see that database: the next
        rollback test gets a new clone. Warns, naming the test.
        """
        self.counters.rebuilt_after_escape.append(test_name)
        warnings.warn(
            f"{test_name or 'a test'} ended unmocked's outer transaction itself (a raw COMMIT "
            "or ROLLBACK statement), so its writes may have been committed. unmocked rebuilt "
            "the database so no other test sees them; use the pg_url fixture for tests that "
            "must really commit.",
            stacklevel=2,
        )
        self._disconnect_rollback_connections()
        if self._rollback_database is not None:
            self.drop_database(self._rollback_database)
            self._rollback_database = None

    def _disconnect_rollback_connections(self) -> None:
        for conn in self._rollback_connections.values():
            conn.disconnect()
        self._rollback_connections.clear()

    # -- reporting ----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once a server was found or started for this session."""
        return self._running is not None

    def ready(self, template: bool = True) -> str:
        """Get the server (and with ``template`` the template) now; one line saying what it got.

        For the plugin, which prepares before the first test so that the run's header can say so.
        ``template=False`` when the migrations are chosen later (Django's, by a session fixture).
        """
        started = time.perf_counter()
        parts = [f"unmocked: {self.server.describe()}"]
        if template:
            built = self.template()
            how = "reused" if built.reused else f"built in {built.seconds:.2f} s"
            parts.append(f"template {built.fingerprint[:6]} {how}")
        parts.append(f"ready in {time.perf_counter() - started:.2f} s")
        return ", ".join(parts)

    def summary(self) -> str:
        """One line for the end of a run: server, template, what the tests used."""
        parts = [f"unmocked: {self.server.describe()}"]
        counters = self.counters
        if counters.template_fingerprint is not None:
            built = counters.template_build_seconds
            how = "reused" if built is None else f"built in {built:.2f} s"
            parts.append(f"template {counters.template_fingerprint[:6]} {how}")
        if counters.rollback_tests or counters.fresh_databases:
            fresh = f"{counters.fresh_databases} fresh databases"
            if counters.fresh_databases:
                fresh += f" ({counters.fresh_reset} reset, {counters.fresh_cloned} cloned)"
            parts.append(
                f"{counters.rollback_tests} rollback tests, {fresh}, "
                f"database time {counters.database_seconds:.2f} s"
            )
        lines = [", ".join(parts)]
        if counters.reset_unavailable and counters.fresh_databases:
            lines.append(
                f"unmocked: pg_url databases were cloned for every test, not reset: "
                f"{counters.reset_unavailable}"
            )
        for name, test in sorted(counters.kept.items(), key=lambda item: item[1]):
            lines.append(f"unmocked: kept the database of failed {test}: unmocked psql {name}")
        if counters.kept_discarded:
            lines.append(
                f"unmocked: {counters.kept_discarded} more failed tests' databases were not kept "
                f"(at most {KEEP_AT_MOST} per process)"
            )
        return "\n".join(lines)

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Drop this session's databases, release its lease, stop a server it started."""
        self._disconnect_rollback_connections()
        if self._admin is not None:
            if self._fresh_databases is not None:
                self._fresh_databases.close()
                self._fresh_databases = None
            if self._rollback_database is not None:
                self.drop_database(self._rollback_database)
                self._rollback_database = None
            self._admin.close()
            self._admin = None
        if self._lease is not None:
            self._lease.close()
            self._lease = None
        if self._running is not None:
            self._running.close()
            self._running = None
