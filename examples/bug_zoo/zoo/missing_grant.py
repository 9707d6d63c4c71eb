"""A user's profile, for the account page.

Password hashes are for the login service alone: migrations/006_users.sql grants the app's role
the other columns of ``users``, one by one. Fixed: the query names the columns the page shows.
Buggy: ``SELECT *`` asks for every column, ``password_hash`` too. As the superuser, who may read
anything, the page works; as the app's role it fails with ``permission denied for table users``.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from zoo import variant


@dataclass(frozen=True)
class Profile:
    id: int
    email: str
    name: str


def sign_up(conn: psycopg.Connection, email: str, name: str) -> int:
    query = "INSERT INTO users (email, name) VALUES (%s, %s) RETURNING id"
    return conn.execute(query, (email, name)).fetchone()[0]


PROFILE = variant(
    fixed="SELECT id, email, name FROM users WHERE id = %s",
    buggy="SELECT * FROM users WHERE id = %s",
)


def profile(conn: psycopg.Connection, user_id: int) -> Profile:
    row = conn.cursor(row_factory=dict_row).execute(PROFILE, (user_id,)).fetchone()
    return Profile(row["id"], row["email"], row["name"])
