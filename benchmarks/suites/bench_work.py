"""The one piece of work every benchmarked test does, so that only the isolation differs.

A test inserts a row into a table, a child row that references it and a grandchild row that
references the child (three foreign keys checked, several indexes updated), commits as code under
test would, then reads the three rows back with a join. The bare mode builds and checks the same
rows in plain Python, which gives the cost of pytest itself. The async modes send the same
statements, in the same order, over psycopg's ``AsyncConnection``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

INSERT_PARENT = "INSERT INTO entity_01 (name, payload) VALUES (%s, %s) RETURNING id"
INSERT_CHILD = "INSERT INTO entity_02 (name, parent_id) VALUES (%s, %s) RETURNING id"
INSERT_GRANDCHILD = "INSERT INTO entity_03 (name, parent_id) VALUES (%s, %s) RETURNING id"

ROUND_TRIP = """
SELECT grandchild.name, child.name, parent.name, parent.payload
  FROM entity_03 AS grandchild
  JOIN entity_02 AS child ON child.id = grandchild.parent_id
  JOIN entity_01 AS parent ON parent.id = child.parent_id
 WHERE grandchild.id = %s
"""


def rows_for(number: int) -> tuple[str, str, str, dict[str, int]]:
    """The names and payload test ``number`` writes, distinct per test."""
    return (f"grandchild {number}", f"child {number}", f"parent {number}", {"test": number})


def database_round_trip(conn: psycopg.Connection[Any], number: int) -> None:
    """Write a parent, child and grandchild row, commit, and read them back joined."""
    grandchild, child, parent, payload = rows_for(number)
    with conn.cursor() as cursor:
        cursor.execute(INSERT_PARENT, (parent, Jsonb(payload)))
        parent_id = _one(cursor.fetchone())
        cursor.execute(INSERT_CHILD, (child, parent_id))
        child_id = _one(cursor.fetchone())
        cursor.execute(INSERT_GRANDCHILD, (grandchild, child_id))
        grandchild_id = _one(cursor.fetchone())
    conn.commit()
    found = conn.execute(ROUND_TRIP, (grandchild_id,)).fetchone()
    assert found == (grandchild, child, parent, payload)


async def async_database_round_trip(conn: psycopg.AsyncConnection[Any], number: int) -> None:
    """:func:`database_round_trip` over an ``AsyncConnection``: the same statements, awaited."""
    grandchild, child, parent, payload = rows_for(number)
    async with conn.cursor() as cursor:
        await cursor.execute(INSERT_PARENT, (parent, Jsonb(payload)))
        parent_id = _one(await cursor.fetchone())
        await cursor.execute(INSERT_CHILD, (child, parent_id))
        child_id = _one(await cursor.fetchone())
        await cursor.execute(INSERT_GRANDCHILD, (grandchild, child_id))
        grandchild_id = _one(await cursor.fetchone())
    await conn.commit()
    found = await (await conn.execute(ROUND_TRIP, (grandchild_id,))).fetchone()
    assert found == (grandchild, child, parent, payload)


def python_round_trip(number: int) -> None:
    """The same rows kept in dictionaries: what the test costs when nothing leaves Python."""
    grandchild, child, parent, payload = rows_for(number)
    tables: dict[str, dict[int, dict[str, Any]]] = {"parent": {}, "child": {}, "grandchild": {}}
    tables["parent"][1] = {"name": parent, "payload": payload}
    tables["child"][1] = {"name": child, "parent_id": 1}
    tables["grandchild"][1] = {"name": grandchild, "parent_id": 1}
    row = tables["grandchild"][1]
    child_row = tables["child"][row["parent_id"]]
    parent_row = tables["parent"][child_row["parent_id"]]
    found = (row["name"], child_row["name"], parent_row["name"], parent_row["payload"])
    assert found == (grandchild, child, parent, payload)


def _one(row: tuple[Any, ...] | None) -> int:
    assert row is not None
    return int(row[0])
