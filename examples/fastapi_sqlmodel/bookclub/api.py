"""The HTTP API. Each request gets a session from ``get_session``; tests override it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import any_, case, func, literal, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, create_engine, select

from bookclub.models import Favourite, Member, NewMember

engine = create_engine(
    os.environ.get("BOOKCLUB_DATABASE_URL", "postgresql+psycopg://localhost/bookclub")
)
app = FastAPI(title="Book club")


def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@app.post("/members", status_code=201)
def join(new: NewMember, session: SessionDep) -> Member:
    member = Member.model_validate(new)
    session.add(member)
    try:
        session.commit()
    except IntegrityError:
        # Only the database knows the email is taken. The failed unit of work must be rolled
        # back before this session can be used again.
        session.rollback()
        raise HTTPException(409, f"{new.email} is already a member") from None
    session.refresh(member)
    return member


@app.post("/members/{member_id}/favourites")
def add_favourite(member_id: int, favourite: Favourite, session: SessionDep) -> list[int]:
    """Append a book once, in SQL: two requests at once cannot lose each other's book.

    (``member.favourite_book_ids.append(...)`` would look right and save nothing: SQLAlchemy does
    not notice changes made inside a list.)
    """
    books = Member.favourite_book_ids
    already_there = literal(favourite.book_id) == any_(books)
    favourites = session.execute(
        update(Member)
        .where(Member.id == member_id)
        .values(
            favourite_book_ids=case(
                (already_there, books), else_=func.array_append(books, favourite.book_id)
            )
        )
        .returning(books)
    ).scalar_one_or_none()
    if favourites is None:
        raise HTTPException(404, f"no member {member_id}")
    session.commit()
    return favourites


@app.get("/members")
def members_interested_in(topic: str, session: SessionDep) -> list[str]:
    """Names of members whose preferences list ``topic`` (JSONB containment: ``@>``)."""
    wanted = {"topics": [topic]}
    query = select(Member.name).where(Member.preferences.contains(wanted)).order_by(Member.name)
    return list(session.exec(query))
