"""FastAPI apps get the test's session through a dependency override: the app's own commits behave
as in production, a real unique violation becomes the app's 409, and nothing reaches the next test.
Each suite is a small user project run as a user would run it, on a server of each kind: sync apps
with TestClient (SQLAlchemy and SQLModel sessions), async apps with httpx's ASGITransport (both
async drivers, under pytest-asyncio and under anyio)."""

from __future__ import annotations

import pytest

from helpers import EACH_KIND_OF_SERVER

# Imported once here, not in each in-process pytester run: pytester drops the modules a run
# imported, and importing a C extension's Python half a second time can crash (asyncpg does).
pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("asyncpg")
pytest.importorskip("sqlalchemy.dialects.postgresql.asyncpg")

PROVIDERS = EACH_KIND_OF_SERVER

SYNC_APP = """
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

app = FastAPI()


def get_session() -> Session:
    raise RuntimeError("production opens a session on the real engine here")


class NewUser(BaseModel):
    email: str


@app.post("/users", status_code=201)
def sign_up(user: NewUser, session: Session = Depends(get_session)) -> dict:
    insert = text("INSERT INTO users (email) VALUES (:email) RETURNING id")
    try:
        user_id = session.execute(insert, {"email": user.email}).scalar_one()
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HTTPException(409, f"{user.email} is already registered") from None
    return {"id": user_id}


@app.get("/users/count")
def count(session: Session = Depends(get_session)) -> dict:
    return {"count": session.execute(text("SELECT count(*) FROM users")).scalar_one()}
"""

SYNC_SUITE = """
import pytest
from fastapi.testclient import TestClient

from shop import app, get_session


@pytest.fixture
def client(sa_session):
    app.dependency_overrides[get_session] = lambda: sa_session
    with TestClient(app) as client:
        yield client
    app.dependency_overrides.clear()


@pytest.mark.parametrize("attempt", range(3))
def test_sign_up_commits_and_a_duplicate_is_a_409(client, attempt):
    assert client.post("/users", json={"email": "a@example.com"}).status_code == 201
    assert client.post("/users", json={"email": "a@example.com"}).status_code == 409
    assert client.get("/users/count").json() == {"count": 1}


def test_the_test_sees_the_app_writes_through_pg(client, pg):
    client.post("/users", json={"email": "b@example.com"})
    assert pg.execute("SELECT email FROM users").fetchall() == [("b@example.com",)]
"""


def test_sync_app_commits_through_the_override_and_nothing_reaches_the_next_test(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(shop=SYNC_APP, test_shop=SYNC_SUITE)
    user_project.runpytest("-p", "randomly").assert_outcomes(passed=4)


def test_sqlmodel_models_work_with_sa_session_and_sqlmodel_session(
    user_project: pytest.Pytester,
) -> None:
    pytest.importorskip("sqlmodel")
    user_project.makepyfile(
        models="""
        from sqlmodel import Field, SQLModel

        class User(SQLModel, table=True):
            __tablename__ = "users"
            id: int | None = Field(default=None, primary_key=True)
            email: str
        """,
        test_models="""
        import pytest
        from sqlmodel import select

        from models import User

        @pytest.mark.parametrize("attempt", range(2))
        def test_sqlmodel_session_exec(sqlmodel_session, attempt):
            sqlmodel_session.add(User(email="a@example.com"))
            sqlmodel_session.commit()
            assert [u.email for u in sqlmodel_session.exec(select(User))] == ["a@example.com"]

        @pytest.mark.parametrize("attempt", range(2))
        def test_sa_session_runs_sqlmodel_select_through_scalars(sa_session, attempt):
            sa_session.add(User(email="a@example.com"))
            sa_session.commit()
            assert [u.email for u in sa_session.scalars(select(User))] == ["a@example.com"]
            assert not hasattr(sa_session, "exec")  # exec() is SQLModel's own Session's

        def test_both_sessions_share_the_test_transaction(sa_session, sqlmodel_session):
            sa_session.add(User(email="a@example.com"))
            sa_session.flush()
            assert len(sqlmodel_session.exec(select(User)).all()) == 1
        """,
    )
    # In a process of its own: SQLModel's one global MetaData would refuse a second "users"
    # table from an earlier in-process run.
    user_project.runpytest_subprocess("-p", "randomly").assert_outcomes(passed=5)


ASYNC_APP = """
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

app = FastAPI()


async def get_session() -> AsyncSession:
    raise RuntimeError("production opens a session on the real engine here")


class NewUser(BaseModel):
    email: str


@app.post("/users", status_code=201)
async def sign_up(user: NewUser, session: AsyncSession = Depends(get_session)) -> dict:
    insert = text("INSERT INTO users (email) VALUES (:email) RETURNING id")
    try:
        user_id = (await session.execute(insert, {"email": user.email})).scalar_one()
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise HTTPException(409, f"{user.email} is already registered") from None
    return {"id": user_id}


@app.post("/orders", status_code=201)
async def order(user_id: int, session: AsyncSession = Depends(get_session)) -> dict:
    # The foreign key is DEFERRABLE INITIALLY DEFERRED: only the commit can refuse it.
    insert = text("INSERT INTO orders (user_id, amount) VALUES (:user_id, 1)")
    await session.execute(insert, {"user_id": user_id})
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise HTTPException(404, f"no user {user_id}") from None
    return {}
"""

ASYNC_SUITE = """
import httpx
import pytest
import pytest_asyncio

from shop import app, get_session


@pytest.fixture(params=["asyncpg", "psycopg"])
def sa_async_driver(request):
    return request.param


def client_for(session):
    app.dependency_overrides[get_session] = lambda: session
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest_asyncio.fixture
async def client(sa_async_session):
    async with client_for(sa_async_session) as client:
        yield client
    app.dependency_overrides.clear()


@pytest.fixture
async def anyio_client(sa_async_session):
    async with client_for(sa_async_session) as client:
        yield client
    app.dependency_overrides.clear()


@pytest.mark.parametrize("attempt", range(2))
@pytest.mark.asyncio
async def test_sign_up_commits_and_a_duplicate_is_a_409(client, attempt):
    assert (await client.post("/users", json={"email": "a@example.com"})).status_code == 201
    assert (await client.post("/users", json={"email": "a@example.com"})).status_code == 409


@pytest.mark.parametrize("attempt", range(2))
@pytest.mark.anyio
async def test_sign_up_under_anyio(anyio_client, attempt):
    assert (await anyio_client.post("/users", json={"email": "a@example.com"})).status_code == 201


@pytest.mark.asyncio
async def test_commit_refuses_an_order_of_no_user_as_production_would(client):
    assert (await client.post("/orders", params={"user_id": -1})).status_code == 404
"""


def test_async_app_commits_through_the_override_and_nothing_reaches_the_next_test(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(shop=ASYNC_APP, test_shop=ASYNC_SUITE)
    user_project.runpytest("-p", "randomly").assert_outcomes(passed=2 * 5)
