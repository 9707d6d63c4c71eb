"""The ``queries`` fixture's object: the statements a test sent, and checks over blocks of them.

In the spirit of ``caplog``: :attr:`Queries.statements` holds what the test's code sent to the
test's databases while the test ran (not its fixtures' set-up), whatever the path (``pg``,
SQLAlchemy, Django, a connection of its own to ``pg_url``). Each check is a block that fails the
test when it ends, with the statements listed, numbered, each with the line that sent it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from unmocked.checks.explaining import Explainer, unindexed
from unmocked.checks.plans import Plan
from unmocked.checks.recording import Recorder, Statement, numbered
from unmocked.checks.shapes import shape


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
        self._explainer = Explainer(connect)

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
        found = self._explainer.full_reads(block.statements, tables)
        if found:
            raise QueryCheckFailed(unindexed(found, tables))

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
        return self._explainer.explain(database, sql, params)

    def close(self) -> None:
        self._explainer.close()

    # -- helpers ---------------------------------------------------------------------------

    def _block(self) -> AbstractContextManager[Recorder]:
        return Recorder(self._recorder.prefixes).listening()


def _counted(statements: list[Statement], allowed: str) -> str:
    return (
        f"The block sent {len(statements)} statement{'s' if len(statements) != 1 else ''}, "
        f"{allowed} allowed:\n{numbered(statements)}"
    )


def repeated(statements: list[Statement], threshold: int) -> list[Statement]:
    """The statements of the shape run most often, when it ran ``threshold`` times or more."""
    if len(statements) < threshold:
        return []
    shapes = collections.Counter(shape(statement.sql) for statement in statements)
    counted = [(count, text) for text, count in shapes.items() if count >= threshold]
    if not counted:
        return []
    _, text = max(counted)
    return [statement for statement in statements if shape(statement.sql) == text]


def n_plus_one(statements: list[Statement], threshold: int) -> str | None:
    """The paragraph naming the most repeated shape run ``threshold`` times or more, or None."""
    same = repeated(statements, threshold)
    if not same:
        return None
    lines = collections.Counter(str(s.line) for s in same if s.line is not None)
    where = f", from {lines.most_common(1)[0][0]}" if lines else ""
    return (
        f"N+1 queries: one statement ran {len(same)} times (the threshold is {threshold})"
        f"{where}:\n  {shape(same[0].sql)}\n"
        "Load those rows in one statement instead of one per row: a join, an IN list, "
        "selectinload / joinedload (SQLAlchemy), select_related / prefetch_related (Django)."
    )
