"""What a statement's plan says about indexes, on a test's handful of rows.

The planner prefers a sequential scan on a small table whatever indexes exist, so a plan taken as it
is says nothing about production. The question asked instead is whether any other plan exists: the
statement is explained with ``enable_seqscan = off``, and a table it still reads in full is one that
no index can serve for it. A table counts as read in full (:attr:`Plan.unindexed`) when the plan
scans it

- sequentially with a filter (no index serves the ``WHERE``);
- sequentially as one side of a join whose other side is restricted (no index on the join key:
  every row is read to find a few);
- sequentially under a sort under a ``LIMIT`` (no index serves the ``ORDER BY``);
- through an index whose leading column the condition does not use (the whole index is read).

A sequential scan with nothing to serve (``SELECT * FROM t``) reads the table because it was asked
to, and is not counted. Tables of ``pg_catalog`` and ``information_schema`` never are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from unmocked.checks.recording import Placeholders

_SCAN_OF_INDEX = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
_JOINS = ("Nested Loop", "Hash Join", "Merge Join")
_PASS_THROUGH = ("Hash", "Materialize", "Sort", "Incremental Sort", "Memoize", "Gather")
_CATALOGS = ("pg_catalog", "information_schema")


@dataclass(frozen=True)
class FullRead:
    """One table a plan reads in full, and why."""

    table: str
    why: str


@dataclass(frozen=True)
class Plan:
    """A statement's plan with sequential scans switched off (see the module's docstring)."""

    sql: str
    json: list[dict[str, Any]]
    """``EXPLAIN (FORMAT JSON)``'s output."""
    full_reads: tuple[FullRead, ...]

    @property
    def unindexed(self) -> tuple[str, ...]:
        """The tables the statement must read in full, each once, in plan order."""
        return tuple(dict.fromkeys(read.table for read in self.full_reads))

    def __str__(self) -> str:
        return "\n".join(_lines(self.json[0]["Plan"], 0))


def explain(
    conn: psycopg.Connection[Any],
    sql: str,
    params: Any = None,
    placeholders: Placeholders = "%s",
) -> Plan:
    """Explain ``sql`` (with ``params``, or as a generic plan on PostgreSQL 16+ when it has
    placeholders and none are given) on ``conn``, with sequential scans off. Nothing is run:
    ``EXPLAIN`` without ``ANALYZE`` only plans. ``placeholders``: ``$1`` for asyncpg's text."""
    options = "FORMAT JSON"
    if params is None and re.search(r"\$\d+", sql) and conn.info.server_version >= 160000:
        options += ", GENERIC_PLAN"
    # RawCursor: PostgreSQL's own $1 placeholders, as asyncpg sent them.
    cursor = psycopg.RawCursor(conn) if placeholders == "$1" else conn.cursor()
    with conn.transaction(force_rollback=True), cursor:
        # A test holding a lock never hangs us.
        conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL lock_timeout = '2s'")
        row = cursor.execute(f"EXPLAIN ({options}) {sql}", params).fetchone()
    document: list[dict[str, Any]] = row[0] if row else []  # psycopg loads EXPLAIN's json
    leading = _leading_columns(conn, document)
    return Plan(sql, document, tuple(_full_reads(document[0]["Plan"], leading)))


def _leading_columns(
    conn: psycopg.Connection[Any], document: list[dict[str, Any]]
) -> dict[str, str]:
    """Each index the plan uses, by name: its first column (absent for an expression's)."""
    names = sorted(
        {node["Index Name"] for node in _nodes(document[0]["Plan"]) if "Index Name" in node}
    )
    if not names:
        return {}
    rows = conn.execute(
        "SELECT c.relname, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE c.relname = ANY(%s)",
        (names,),
    ).fetchall()
    return {str(index): str(column) for index, column in rows}


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def _restricted(node: dict[str, Any]) -> bool:
    """Whether a subtree reads only some rows: a condition, filter or parameter somewhere."""
    keys = ("Index Cond", "Filter", "Recheck Cond", "Join Filter", "Hash Cond")
    return any(any(key in each for key in keys) for each in _nodes(node))


def _table(node: dict[str, Any]) -> str | None:
    name = node.get("Relation Name")
    if name is None or node.get("Schema") in _CATALOGS:
        return None
    schema = node.get("Schema")
    return name if schema in (None, "public") else f"{schema}.{name}"


def _sequential(node: dict[str, Any]) -> dict[str, Any] | None:
    """The sequential scan ``node`` is, or passes rows of on (a hash, a sort...), if any."""
    while node.get("Node Type") in _PASS_THROUGH and len(node.get("Plans", ())) == 1:
        node = node["Plans"][0]
    return node if node.get("Node Type") == "Seq Scan" else None


def _full_reads(
    node: dict[str, Any], leading: dict[str, str], relation: str | None = None
) -> Iterator[FullRead]:
    kind = node.get("Node Type", "")
    table = _table(node) or relation
    if kind == "Seq Scan" and table and "Filter" in node:
        yield FullRead(table, f"Seq Scan, Filter: {node['Filter']}")
    elif kind in _SCAN_OF_INDEX and table:
        column = leading.get(node.get("Index Name", ""))
        condition = node.get("Index Cond", "")
        if column and not re.search(rf"\b{re.escape(column)}\b", condition):
            yield FullRead(
                table,
                f"{kind} using {node['Index Name']}, whose leading column {column} the "
                f"condition {condition or '(none)'} does not use",
            )
    children = node.get("Plans", [])
    if kind in _JOINS and len(children) == 2:
        for this, other in ((children[0], children[1]), (children[1], children[0])):
            scan = _sequential(this)
            if scan is not None and "Filter" not in scan and _restricted(other):
                scanned = _table(scan)
                if scanned:
                    on = node.get("Hash Cond") or node.get("Merge Cond") or node.get("Join Filter")
                    yield FullRead(scanned, f"Seq Scan joined on {on}" if on else "Seq Scan joined")
    if kind == "Limit" and len(children) == 1:
        below = children[0]
        if below.get("Node Type") in ("Sort", "Incremental Sort"):
            scan = _sequential(below)
            scanned = _table(scan) if scan is not None and "Filter" not in scan else None
            if scanned:
                yield FullRead(
                    scanned, f"Seq Scan sorted by {', '.join(below.get('Sort Key', []))}"
                )
    for child in children:
        yield from _full_reads(child, leading, table if kind == "Bitmap Heap Scan" else None)


def _lines(node: dict[str, Any], depth: int) -> Iterator[str]:
    label = node.get("Node Type", "?")
    if "Relation Name" in node:
        label += f" on {node['Relation Name']}"
    if "Index Name" in node:
        label += f" using {node['Index Name']}"
    prefix = "  " * depth + ("-> " if depth else "")
    yield prefix + label
    for key in ("Index Cond", "Recheck Cond", "Filter", "Hash Cond", "Join Filter", "Sort Key"):
        if key in node:
            value = node[key]
            yield (
                "  " * depth
                + f"     {key}: {', '.join(value) if isinstance(value, list) else value}"
            )
    for child in node.get("Plans", ()):
        yield from _lines(child, depth + 1)
