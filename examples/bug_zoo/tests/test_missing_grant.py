"""A privilege the app's role lacks: caught by ``unmocked_role = "app_user"`` (pyproject.toml),
under which the test runs with the app's privileges. As the superuser, who may do anything, this
test passes the buggy version too."""

from __future__ import annotations

from unittest.mock import MagicMock

from zoo.missing_grant import Profile, profile, sign_up


def test_mocked_the_account_page_shows_the_users_profile():
    conn = MagicMock()
    row = {"id": 1, "email": "ann@example.com", "name": "Ann", "password_hash": "..."}
    conn.cursor.return_value.execute.return_value.fetchone.return_value = row
    assert profile(conn, 1) == Profile(1, "ann@example.com", "Ann")


def test_unmocked_the_account_page_shows_the_users_profile(pg):
    ann = sign_up(pg, "ann@example.com", "Ann")
    assert profile(pg, ann) == Profile(ann, "ann@example.com", "Ann")
