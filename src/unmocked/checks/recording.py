"""Every statement code sends to a database of this run, as the driver sent it, with the line of
the code that sent it.

Statements are taken where every path meets: the driver (psycopg 3, asyncpg, psycopg2). The
driver hooks (:mod:`unmocked.checks.drivers`) hand each statement to :func:`note` while at least one
:class:`Recorder` listens, and cost one check of a global otherwise. Only statements to databases
whose names begin with a prefix some listening recorder watches (this run's databases) are kept:
unmocked's own sessions to the server's maintenance database never are, and its own statements in
the test's databases go through the driver's lower layers (``PGconn``), or inside
:func:`own_statements`.

Recording is process-wide, not per thread: a live server's threads, a thread pool or asgiref's
executor send statements for the test too.
"""

from __future__ import annotations

import contextvars
import linecache
import os
import site
import sys
import sysconfig
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal, NamedTuple

Placeholders = Literal["%s", "$1"]
"""How a statement's text holds its parameters: ``%s`` or ``%(name)s`` (psycopg, psycopg2), or
PostgreSQL's own ``$1`` (asyncpg)."""

_OWN = contextvars.ContextVar("unmocked_own_statements", default=False)


class Line(NamedTuple):
    """Where in the code a statement was sent from.

    Lines and statements are named tuples: one of each is made for every statement a test sends,
    and a tuple is made in a third of the time of a frozen dataclass."""

    path: str
    number: int
    function: str

    @property
    def text(self) -> str:
        """The source line itself, stripped; empty when it cannot be read."""
        return linecache.getline(self.path, self.number).strip()

    def __str__(self) -> str:
        where = f"{_shown_path(self.path)}:{self.number}"
        return f"{where} ({self.text})" if self.text else f"{where} in {self.function}"


class Statement(NamedTuple):
    """One statement, as its driver sent it."""

    sql: str
    params: Any
    """The parameters the driver was given (None when there were none, or the path hides them)."""
    database: str
    line: Line | None
    """The line of the user's code that sent it: the nearest frame outside installed libraries,
    the standard library and unmocked, or None when the stack has none."""
    seconds: float = 0.0
    many: int | None = None
    """For ``executemany``: how many parameter sets one call sent."""
    placeholders: Placeholders = "%s"

    def __str__(self) -> str:
        return self.sql


@dataclass(eq=False)  # two recorders are never the same one, whatever they hold
class Recorder:
    """Statements to databases whose names begin with one of ``prefixes``, in order, while
    listening."""

    prefixes: tuple[str, ...]
    statements: list[Statement] = field(default_factory=list)

    @contextmanager
    def listening(self) -> Iterator[Recorder]:
        global _listening
        with _lock:
            _listening = (*_listening, self)
        try:
            yield self
        finally:
            with _lock:
                at = _listening.index(self)
                _listening = _listening[:at] + _listening[at + 1 :]


# Replaced, never changed in place: a hook iterates over it while another thread may add to it.
_listening: tuple[Recorder, ...] = ()
_lock = threading.Lock()


def anyone_listens() -> bool:
    """Whether a driver hook should note what it sends: the one check made when nobody does."""
    return bool(_listening) and not _OWN.get()


def note(
    sql: str,
    params: Any,
    database: str,
    seconds: float,
    line: Line | None,
    many: int | None = None,
    placeholders: Placeholders = "%s",
) -> None:
    """Keep one statement for each recorder that watches ``database``."""
    if line is SETTING_UP:
        return
    statement = None
    for recorder in _listening:
        if database.startswith(recorder.prefixes):
            if statement is None:
                statement = Statement(sql, params, database, line, seconds, many, placeholders)
            recorder.statements.append(statement)


# Functions of libraries that talk to the database while a connection is set up or checked, not
# for the code under test: SQLAlchemy's dialect reading the server on first connect and its pings,
# Django's connection set-up. A statement sent from inside one of them is never recorded.
_SETTING_UP = frozenset(
    {
        "first_connect",
        "on_connect",
        "initialize",
        "do_ping",
        "ping",
        "init_connection_state",
        "ensure_timezone",
        "ensure_role",
    }
)

SETTING_UP = Line("", 0, "")
"""What :func:`caller_line` says of a statement a library sends to set a connection up."""


def caller_line() -> Line | None:
    """The user's line that called the hook calling this; :data:`SETTING_UP` when a library
    sends the statement to set up or check its connection."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if not _library(code.co_filename):
            return Line(code.co_filename, frame.f_lineno, code.co_name)
        if code.co_name in _SETTING_UP and not code.co_filename.startswith(_UNMOCKED):
            return SETTING_UP
        if code.co_name == "greenlet_spawn" and _sets_up(frame.f_locals.get("context")):
            return SETTING_UP
        frame = frame.f_back
    return None


def _sets_up(greenlet: object) -> bool:
    """Whether the synchronous code SQLAlchemy's asyncio layer runs in ``greenlet`` (which
    awaits the statement from there) is setting a connection up."""
    frame = getattr(greenlet, "gr_frame", None)
    while frame is not None:
        if frame.f_code.co_name in _SETTING_UP:
            return True
        frame = frame.f_back
    return False


@contextmanager
def own_statements() -> Iterator[None]:
    """What unmocked itself sends inside is never recorded."""
    token = _OWN.set(True)
    try:
        yield
    finally:
        _OWN.reset(token)


# -- whose line is it ------------------------------------------------------------------------

_UNMOCKED = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _library_folders() -> tuple[str, ...]:
    """Where installed libraries and the standard library live: never the user's code."""
    folders = {
        sysconfig.get_path(name)
        for name in ("stdlib", "platstdlib", "purelib", "platlib")
        if sysconfig.get_path(name)
    }
    folders.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    folders.add(site.getusersitepackages())
    return (*sorted(os.path.join(folder, "") for folder in folders), _UNMOCKED)


_LIBRARIES = _library_folders()
_is_library: dict[str, bool] = {}


def _library(path: str) -> bool:
    known = _is_library.get(path)
    if known is None:
        known = path.startswith("<") or os.path.abspath(path).startswith(_LIBRARIES)
        _is_library[path] = known
    return known


def _shown_path(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def numbered(statements: Sequence[Statement]) -> str:
    """The statements, one per line, numbered, each with the line that sent it."""
    lines = []
    for number, statement in enumerate(statements, 1):
        sql = " ".join(statement.sql.split())
        where = f"\n       from {statement.line}" if statement.line else ""
        many = f" (x{statement.many})" if statement.many else ""
        lines.append(f"  {number:>3}. {sql}{many}{where}")
    return "\n".join(lines)
