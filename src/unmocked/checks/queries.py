"""The ``queries`` fixture's object: the statements a test sent, and checks over blocks of them.

In the spirit of ``caplog``: :attr:`Queries.statements` holds what the test's code sent to the
test's databases while the test ran (not its fixtures' set-up), whatever the path (``pg``,
SQLAlchemy, Django, a connection of its own to ``pg_url``). Each check is a block that fails the
test when it ends, with the statements listed, numbered, each with the line that sent it.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from unmocked.checks import recording
from unmocked.checks.plans import Plan, explain
from unmocked.checks.recording import Placeholders, Recorder, Statement, numbered
from unmocked.checks.shapes import shape

# What EXPLAIN can plan: statements that read tables.
_EXPLAINABLE = ("select", "with", "update", "delete", "insert", "merge", "table")


class QueryCheckFailed(AssertionError):
    """A block of ``queries`` sent what its check forbids: the test fails, naming the statements."""


class Queries:
    """The statements of one test, and checks over blocks of them (see the module's docstring)."""

    def __init__(
        self, prefixes: tuple[str, ...], connect: Callable[[str], psycopg.Connection[Any]]
    ):
        """``prefixes``: the names of the databases watched begin so; ``connect(database)``: a
        connection of unmocked's own to one of them, to explain statements on."""
        self._recorder = Recorder(prefixes)
        self._connect = connect
        self._explainers: dict[str, psycopg.Connection[Any]] = {}

    @property
    def statements(self) -> list[Statement]:
        """The statements sent so far, in order."""
        return list(self._recorder.statements)

    @property
    def count(self) -> int:
        return len(self._recorder.statements)

    def clear(self) -> None:
        self._recorder.statements.clear()

    def recording(self) -> AbstractContextManager[Recorder]:
        """Record while inside (the plugin wraps each test's call in it)."""
        return self._recorder.listening()

    # -- checks ----------------------------------------------------------------------------

    @contextmanager
    def at_most(self, n: int) -> Iterator[Recorder]:
        """Fail the test when the block sends more than ``n`` statements."""
        with self._block() as block:
            yield block
        if len(block.statements) > n:
            raise QueryCheckFailed(_counted(block.statements, f"at most {n}"))

    @contextmanager
    def exactly(self, n: int) -> Iterator[Recorder]:
        """Fail the test when the block sends other than ``n`` statements."""
        with self._block() as block:
            yield block
        if len(block.statements) != n:
            raise QueryCheckFailed(_counted(block.statements, f"exactly {n}"))

    @contextmanager
    def no_n_plus_one(self, threshold: int = 3) -> Iterator[Recorder]:
        """Fail the test when one statement shape runs ``threshold`` times or more in the block."""
        with self._block() as block:
            yield block
        message = n_plus_one(block.statements, threshold)
        if message:
            raise QueryCheckFailed(message)

    @contextmanager
    def indexed(self, tables: list[str] | tuple[str, ...] | None = None) -> Iterator[Recorder]:
        """Fail the test when a statement of the block must read a whole table (one of
        ``tables``, or any) because no index serves its filter, join or ordering."""
        with self._block() as block:
            yield block
        found = []
        for statement in block.statements:
            plan = self._plan_of(statement)
            if plan is None:
                continue
            reads = [
                read for read in plan.full_reads if tables is None or _named(read.table, tables)
            ]
            if reads:
                found.append((statement, reads))
        if found:
            raise QueryCheckFailed(_unindexed(found, tables))

    def explain(self, sql: str, params: Any = None, database: str | None = None) -> Plan:
        """The plan of ``sql`` on the test's database (the one its last statement went to, unless
        ``database`` names it), with sequential scans off: ``.unindexed``, ``.json``, ``str()``."""
        if database is None:
            if not self._recorder.statements:
                raise ValueError(
                    "queries.explain() needs to know the test's database: send a statement "
                    "first, or pass database=..."
                )
            database = self._recorder.statements[-1].database
        return self._explain(database, sql, params)

    def close(self) -> None:
        for conn in self._explainers.values():
            conn.close()
        self._explainers.clear()

    # -- helpers ---------------------------------------------------------------------------

    def _block(self) -> AbstractContextManager[Recorder]:
        return Recorder(self._recorder.prefixes).listening()

    def _explain(
        self, database: str, sql: str, params: Any, placeholders: Placeholders = "%s"
    ) -> Plan:
        """On a connection of unmocked's own to ``database`` (one per database, kept), whose
        statements are never recorded."""
        with recording.own_statements():
            conn = self._explainers.get(database)
            if conn is None or conn.closed:
                conn = self._explainers[database] = self._connect(database)
            return explain(conn, sql, params, placeholders)

    def _plan_of(self, statement: Statement) -> Plan | None:
        text = statement.sql.lstrip().lower()
        if not text.startswith(_EXPLAINABLE) or (
            text.startswith("insert") and not re.search(r"\bselect\b", text)
        ):
            return None  # INSERT ... VALUES, DDL, SET...: no table is read
        params = statement.params[0] if statement.many and statement.params else statement.params
        try:
            return self._explain(statement.database, statement.sql, params, statement.placeholders)
        except psycopg.Error:
            return None  # a temporary table of the test's session, a statement of its own kind...


def _named(table: str, tables: list[str] | tuple[str, ...]) -> bool:
    return table in tables or table.rpartition(".")[2] in tables


def _counted(statements: list[Statement], allowed: str) -> str:
    return (
        f"The block sent {len(statements)} statement{'s' if len(statements) != 1 else ''}, "
        f"{allowed} allowed:\n{numbered(statements)}"
    )


def n_plus_one(statements: list[Statement], threshold: int) -> str | None:
    """The paragraph naming the most repeated shape run ``threshold`` times or more, or None."""
    shapes = collections.Counter(shape(statement.sql) for statement in statements)
    repeated = [(count, text) for text, count in shapes.items() if count >= threshold]
    if not repeated:
        return None
    count, text = max(repeated)
    same = [statement for statement in statements if shape(statement.sql) == text]
    lines = collections.Counter(str(s.line) for s in same if s.line is not None)
    where = f", from {lines.most_common(1)[0][0]}" if lines else ""
    return (
        f"N+1 queries: one statement ran {count} times (the threshold is {threshold}){where}:\n"
        f"  {text}\n"
        "Load those rows in one statement instead of one per row: a join, an IN list, "
        "selectinload / joinedload (SQLAlchemy), select_related / prefetch_related (Django)."
    )


def _unindexed(found: list[tuple[Statement, list[Any]]], tables: Any) -> str:
    lines = []
    for number, (statement, reads) in enumerate(found, 1):
        sql = " ".join(statement.sql.split())
        lines.append(f"  {number:>3}. {sql}")
        if statement.line:
            lines.append(f"       from {statement.line}")
        for read in reads:
            lines.append(f"       reads {read.table} in full: {read.why}")
    which = f" (of {', '.join(tables)})" if tables else ""
    return (
        f"{len(found)} statement{'s' if len(found) != 1 else ''} must read a whole table{which}: "
        "no index serves their filter, join or ordering, which on production's rows is a "
        "scan of every row:\n" + "\n".join(lines) + "\nAdd the index the condition needs "
        "(CREATE INDEX ON table (column)), in a migration."
    )
