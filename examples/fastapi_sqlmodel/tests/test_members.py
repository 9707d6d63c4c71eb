"""Each test drives the real API against a real, migrated PostgreSQL, through the test's session.

A mocked session would return whatever the test told it to; SQLite cannot create these tables at
all (ARRAY, JSONB). Here the unique index, the array append and the JSONB query run for real.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bookclub.api import app, get_session


@pytest.fixture
def client(sqlmodel_session):
    """The app, with every request using the test's session (rolled back after the test)."""
    app.dependency_overrides[get_session] = lambda: sqlmodel_session
    with TestClient(app) as client:
        yield client
    app.dependency_overrides.clear()


def join(client, email, name="Ada", **preferences):
    return client.post("/members", json={"email": email, "name": name, "preferences": preferences})


def test_joining_twice_with_one_email_is_a_409_and_the_api_keeps_working(client):
    assert join(client, "ada@example.com").status_code == 201
    # Raised by PostgreSQL's unique index: a mock never raises it, so the 409 path never runs.
    assert join(client, "ada@example.com").status_code == 409
    # The app rolled its failed unit of work back, so the same session serves the next request.
    assert join(client, "grace@example.com", name="Grace").status_code == 201


def test_favourites_are_appended_in_order_once_each_and_saved(client, pg):
    member_id = join(client, "ada@example.com").json()["id"]
    for book_id in (7, 3, 7):
        response = client.post(f"/members/{member_id}/favourites", json={"book_id": book_id})
    assert response.json() == [7, 3]
    # Read back with plain SQL: what the response said is what PostgreSQL stored.
    saved = pg.execute("SELECT favourite_book_ids FROM members WHERE id = %s", (member_id,))
    assert saved.fetchone()[0] == [7, 3]


def test_a_favourite_for_an_unknown_member_is_a_404(client):
    assert client.post("/members/999999/favourites", json={"book_id": 1}).status_code == 404


def test_topic_search_finds_members_by_jsonb_containment(client):
    join(client, "ada@example.com", name="Ada", topics=["sci-fi", "crime"], newsletter=True)
    join(client, "grace@example.com", name="Grace", topics=["poetry"])
    join(client, "alan@example.com", name="Alan", topics=["sci-fi"])
    assert client.get("/members", params={"topic": "sci-fi"}).json() == ["Ada", "Alan"]
    assert client.get("/members", params={"topic": "cooking"}).json() == []


def test_every_test_starts_with_no_members(pg):
    assert pg.execute("SELECT count(*) FROM members").fetchone()[0] == 0
