"""Plans of the statements a test sent, taken on connections of unmocked's own.

A statement is explained on the database it went to, on one kept connection per database, inside
:func:`~unmocked.checks.recording.own_statements` so that explaining is never recorded. Statements
that read no table (``INSERT ... VALUES``, DDL, ``SET``) are not explained, and one the server
cannot plan from outside the test's session (a temporary table of that session) has no plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from unmocked.checks import recording
from unmocked.checks.plans import FullRead, Plan, explain
from unmocked.checks.recording import Placeholders, Statement

# What EXPLAIN can plan: statements that read tables.
_EXPLAINABLE = ("select", "with", "update", "delete", "insert", "merge", "table")


class Explainer:
    """Explains statements on ``connect(database)``'s connections, kept until :meth:`close`."""

    def __init__(self, connect: Callable[[str], psycopg.Connection[Any]]) -> None:
        self._connect = connect
        self._connections: dict[str, psycopg.Connection[Any]] = {}

    def explain(
        self, database: str, sql: str, params: Any = None, placeholders: Placeholders = "%s"
    ) -> Plan:
        with recording.own_statements():
            conn = self._connections.get(database)
            if conn is None or conn.closed:
                conn = self._connections[database] = self._connect(database)
            return explain(conn, sql, params, placeholders)

    def plan_of(self, statement: Statement) -> Plan | None:
        """The plan of a recorded statement, or None for one that reads no table or cannot be
        planned from outside its session."""
        text = statement.sql.lstrip().lower()
        if not text.startswith(_EXPLAINABLE) or (
            text.startswith("insert") and not re.search(r"\bselect\b", text)
        ):
            return None  # INSERT ... VALUES, DDL, SET...: no table is read
        params = statement.params[0] if statement.many and statement.params else statement.params
        try:
            return self.explain(statement.database, statement.sql, params, statement.placeholders)
        except psycopg.Error:
            return None  # a temporary table of the test's session, a statement of its own kind...

    def full_reads(
        self, statements: Sequence[Statement], tables: Sequence[str] | None = None
    ) -> list[tuple[Statement, list[FullRead]]]:
        """Each statement that must read a whole table (one of ``tables``, or any), with those
        reads."""
        found = []
        for statement in statements:
            plan = self.plan_of(statement)
            if plan is None:
                continue
            reads = [
                read for read in plan.full_reads if tables is None or _named(read.table, tables)
            ]
            if reads:
                found.append((statement, reads))
        return found

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()


def _named(table: str, tables: Sequence[str]) -> bool:
    """``public.orders`` is named by ``orders`` as by ``public.orders``."""
    return table in tables or table.rpartition(".")[2] in tables


def unindexed(found: list[tuple[Statement, list[FullRead]]], tables: Sequence[str] | None) -> str:
    """The paragraph naming each statement of ``found``, its line and the tables it reads in
    full."""
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
