"""What a template build is doing while it runs: progress lines for people, and its timeout.

A build runs the user's migrations, which may take minutes or hang on a lock. So, from a thread of
its own (:class:`_BuildWatch`), while the migrations run on the calling thread:

1. after :data:`FIRST_PROGRESS_AFTER` seconds, and then every few seconds, a line says which step
   runs and for how long: the source's ``current_step`` (SqlFiles names its files), else the
   migration's own code on the building thread's stack (an Alembic revision, a Django migration,
   a callable), else the statement running in the build database, and which session blocks it;
2. at the build timeout the build's statements are cancelled, and after :data:`CANCEL_GRACE` its
   sessions are ended: :func:`apply_watched` then raises a MigrationError naming the step.

Lines go to standard error, or where :func:`progress_lines_to` says (the pytest plugin: its
terminal reporter). :mod:`unmocked.templates` uses the same lines for a run waiting on another
run's build.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psycopg
from psycopg import sql

from unmocked.errors import MigrationError
from unmocked.migrations import MigrationSource, shown_path
from unmocked.ownership import AdminConnection
from unmocked.urls import with_database

# A build or a wait shorter than this says nothing: most templates build in well under a second,
# and xdist workers wait for one another's build on every cold start.
FIRST_PROGRESS_AFTER = 2.0
# Then a line every 5 s, every 30 s after the first minute: enough to see it move, never a flood.
PROGRESS_EVERY = 5.0
PROGRESS_EVERY_AFTER_A_MINUTE = 30.0
# How long a timed-out build may take to notice its cancelled statement before its sessions are
# ended outright (a migration that retries, or sits in a driver's loop).
CANCEL_GRACE = 5.0
# How often the watch looks at which step runs, to say how long it has run.
_LOOK_EVERY = 0.25

ProgressLines = Callable[[str], None]


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


_progress_lines: ContextVar[ProgressLines] = ContextVar(
    "unmocked_progress_lines", default=_to_stderr
)


def progress_lines() -> ProgressLines:
    """Where progress lines go in this context (standard error unless :func:`progress_lines_to`)."""
    return _progress_lines.get()


@contextmanager
def progress_lines_to(write: ProgressLines) -> Iterator[None]:
    """Hand the progress lines of builds and waits begun in the block to ``write``.

    Standard error otherwise. ``write`` may be called from another thread than the block's.
    """
    token = _progress_lines.set(write)
    try:
        yield
    finally:
        _progress_lines.reset(token)


def apply_watched(
    admin_url: str, build: str, source: MigrationSource, name: str, timeout: float
) -> None:
    """``source.apply`` into ``build``, watched by a :class:`_BuildWatch`; a timeout is an error."""
    with _BuildWatch(admin_url, build, source, name, timeout, progress_lines()) as watch:
        try:
            source.apply(with_database(admin_url, build))
        except Exception:
            if watch.timed_out:
                raise MigrationError(watch.timeout_message()) from None
            raise
    if watch.timed_out:  # the migration caught its cancelled statement and went on
        raise MigrationError(watch.timeout_message())


# -- watching a build -------------------------------------------------------------------------

_RUNNING_STATEMENT = """
SELECT regexp_replace(left(query, 200), '\\s+', ' ', 'g'),
       extract(epoch FROM clock_timestamp() - query_start)::float8,
       pg_blocking_pids(pid)
  FROM pg_stat_activity
 WHERE datname = %s AND state = 'active' AND pid <> pg_backend_pid()
 ORDER BY query_start
 LIMIT 1
"""


@dataclass(frozen=True)
class _Statement:
    """The oldest statement running in the build database, as the server reports it."""

    text: str
    seconds: float
    blocked_by: list[int]


class _BuildWatch:
    """One build's progress lines and timeout, from a thread of its own.

    The migrations run on the calling thread, as they always have (a Django connection belongs to
    its thread; signal handlers work only on the main one); the watch only looks at that thread's
    stack and at the build database's sessions, and at the timeout cancels their statements,
    then, if the build goes on, ends those sessions. It opens its own connection, and only once
    the build has run for :data:`FIRST_PROGRESS_AFTER`: quick builds pay nothing for it.
    """

    def __init__(
        self,
        admin_url: str,
        build: str,
        source: MigrationSource,
        name: str,
        timeout: float,
        write: ProgressLines,
    ) -> None:
        self.admin_url = admin_url
        self.build = build
        self.source = source
        self.name = name
        self.timeout = timeout
        self.write = write
        self.timed_out = False
        self._building_thread = threading.get_ident()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="unmocked-build-watch", daemon=True
        )
        self._conn: AdminConnection | None = None
        self._started = 0.0
        self._step: str | None = None
        self._step_file: str | None = None
        self._step_since = 0.0
        self._timed_out_in = ""

    def __enter__(self) -> _BuildWatch:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def timeout_message(self) -> str:
        return (
            f"Building template {self.name} ({self.source.describe()}) took longer than "
            f"unmocked_build_timeout allows ({self.timeout:g} s): {self._timed_out_in} was "
            "running, and unmocked cancelled it. Nothing was cached. See what it waits for (a "
            "lock another session holds, a slow query, pg_sleep), or raise "
            "unmocked_build_timeout (UNMOCKED_BUILD_TIMEOUT, in seconds; 0 for no limit)."
        )

    def _watch(self) -> None:
        due = FIRST_PROGRESS_AFTER
        cancelled_at: float | None = None
        while not self._done.wait(_LOOK_EVERY):
            elapsed = time.monotonic() - self._started
            self._look(elapsed)
            if cancelled_at is not None:
                # Again at every look: a source may go on after its statement was cancelled
                # (SqlFiles replays the file to find the failing line).
                late = elapsed >= cancelled_at + CANCEL_GRACE
                self._end_sessions("pg_terminate_backend" if late else "pg_cancel_backend")
            elif self.timeout and elapsed >= self.timeout:
                self._time_out()
                cancelled_at = elapsed
            elif elapsed >= due:
                self.say(self._progress_line(elapsed))
                due = next_progress(elapsed)

    def _look(self, elapsed: float) -> None:
        """Note which step runs now, and since when (by file: a revision's lines move on)."""
        step, file = self._current_step()
        if file != self._step_file:
            self._step_file, self._step_since = file, elapsed
        self._step = step

    def _current_step(self) -> tuple[str | None, str | None]:
        said = _said_step(self.source)
        if said:
            return said, said
        frame = sys._current_frames().get(self._building_thread)
        return _project_code(frame)

    def _time_out(self) -> None:
        self.timed_out = True
        self._timed_out_in = self._step or self._statement_words(self._statement()) or "it"
        self.say(
            f"unmocked: building template {self.name} took longer than unmocked_build_timeout "
            f"({self.timeout:g} s), in {self._timed_out_in}: cancelling it"
        )
        self._end_sessions("pg_cancel_backend")

    def _progress_line(self, elapsed: float) -> str:
        statement = self._statement()
        if self._step:
            doing = f"{self._step} has run for {elapsed - self._step_since:.0f} s"
        else:
            doing = self._statement_words(statement) or "the migrations run"
        if statement and statement.blocked_by:
            sessions = ", ".join(map(str, statement.blocked_by))
            doing += f", waiting for a lock that PostgreSQL session {sessions} holds"
        limit = (
            f"; it is cancelled at {self.timeout:g} s (unmocked_build_timeout)"
            if self.timeout
            else ""
        )
        return (
            f"unmocked: building template {self.name} ({self.source.describe()}) for "
            f"{elapsed:.0f} s: {doing}{limit}"
        )

    @staticmethod
    def _statement_words(statement: _Statement | None) -> str:
        if statement is None:
            return ""
        text = statement.text if len(statement.text) <= 60 else statement.text[:57] + "..."
        return f"statement `{text}`, running for {statement.seconds:.0f} s"

    def _statement(self) -> _Statement | None:
        conn = self._connection()
        if conn is None:
            return None
        try:
            row = conn.execute(_RUNNING_STATEMENT, (self.build,)).fetchone()
        except psycopg.Error:
            return None
        if row is None:
            return None
        blocked_by = row[2] if isinstance(row[2], list) else []
        return _Statement(str(row[0]).strip(), float(str(row[1] or 0)), blocked_by)

    def _end_sessions(self, function: str) -> None:
        conn = self._connection()
        if conn is None:
            return
        # Errors pass: the server is gone or refuses, and the build fails on its own then.
        with suppress(psycopg.Error):
            conn.execute(
                sql.SQL(
                    "SELECT {}(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()"
                ).format(sql.Identifier(function)),
                (self.build,),
            )

    def _connection(self) -> AdminConnection | None:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)
            except psycopg.Error:
                return None
        return self._conn

    def say(self, line: str) -> None:
        say(self.write, line)


def say(write: ProgressLines, line: str) -> None:
    with suppress(OSError, ValueError):  # a closed terminal must not stop the build
        write(line)


def next_progress(elapsed: float) -> float:
    """When the line after one written at ``elapsed`` seconds is due."""
    return elapsed + (PROGRESS_EVERY if elapsed < 60 else PROGRESS_EVERY_AFTER_A_MINUTE)


def _said_step(source: object) -> str | None:
    """The ``current_step`` a source gives, or the source it wraps (``WithExtensions.source``)."""
    for _ in range(5):
        step = getattr(source, "current_step", None)
        if isinstance(step, str) and step:
            return step
        source = getattr(source, "source", None)
        if source is None:
            return None
    return None


def _project_code(frame: FrameType | None) -> tuple[str | None, str | None]:
    """``(path, line N; path)`` of the innermost frame of the project's own code under the build.

    Only frames inside ``source.apply`` count: the standard library, installed packages and
    unmocked itself are skipped, so what is left is the migration's code (a revision, a Django
    migration, the callable).
    """
    found: tuple[str | None, str | None] = (None, None)
    while frame is not None:
        code = frame.f_code
        if code is apply_watched.__code__:
            return found
        if found == (None, None) and not _is_library(code.co_filename):
            shown = shown_path(Path(code.co_filename), Path.cwd())
            found = (f"{shown}, line {frame.f_lineno}", shown)
        frame = frame.f_back
    return None, None  # not under a build (it just ended)


@functools.cache
def _is_library(filename: str) -> bool:
    if filename.startswith("<"):
        return True
    path = os.path.realpath(filename)
    return any(path.startswith(folder + os.sep) for folder in _library_folders())


@functools.cache
def _library_folders() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    folders = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    folders.add(str(Path(__file__).resolve().parent))
    return tuple(os.path.realpath(folder) for folder in folders)


# -- waiting for another run's build ----------------------------------------------------------
