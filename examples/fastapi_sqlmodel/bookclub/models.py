"""The tables, as SQLModel models: PostgreSQL types that SQLite and mocks do not have."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Integer, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel


class Member(SQLModel, table=True):
    __tablename__ = "members"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True)
    name: str
    # Book ids in the order the member added them; appended in SQL, never read-modify-written.
    favourite_book_ids: list[int] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(Integer), nullable=False, server_default=text("'{}'")),
    )
    # Free-form settings, queried with JSONB containment (@>).
    preferences: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'")),
    )


class NewMember(SQLModel):
    email: str
    name: str
    preferences: dict[str, Any] = {}


class Favourite(SQLModel):
    book_id: int
