"""The work of ``bench_work.database_round_trip``, done through the SQLAlchemy ORM.

Three mapped classes cover the columns the work touches in the first three generated tables; the
test adds a parent, child and grandchild (a flush each, as an app that needs the ids would), commits
and reads them back with the same two joins. ``async_orm_round_trip`` does the same on an
``AsyncSession``, for the async modes.
"""

from __future__ import annotations

from typing import Any

from bench_work import rows_for
from sqlalchemy import BigInteger, ForeignKey, Select, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Parent(Base):
    __tablename__ = "entity_01"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str]
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)


class Child(Base):
    __tablename__ = "entity_02"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str]
    parent_id: Mapped[int] = mapped_column(ForeignKey("entity_01.id"))


class Grandchild(Base):
    __tablename__ = "entity_03"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str]
    parent_id: Mapped[int] = mapped_column(ForeignKey("entity_02.id"))


def orm_round_trip(session: Session, number: int) -> None:
    """Add a parent, child and grandchild, commit, and read them back joined."""
    grandchild, child, parent, payload = rows_for(number)
    parent_row = Parent(name=parent, payload=payload)
    session.add(parent_row)
    session.flush()
    child_row = Child(name=child, parent_id=parent_row.id)
    session.add(child_row)
    session.flush()
    grandchild_row = Grandchild(name=grandchild, parent_id=child_row.id)
    session.add(grandchild_row)
    session.flush()
    grandchild_id = grandchild_row.id
    session.commit()
    found = session.execute(_joined(grandchild_id)).one()
    assert tuple(found) == (grandchild, child, parent, payload)


async def async_orm_round_trip(session: AsyncSession, number: int) -> None:
    """:func:`orm_round_trip` on an ``AsyncSession``: the same adds, flushes, commit and join."""
    grandchild, child, parent, payload = rows_for(number)
    parent_row = Parent(name=parent, payload=payload)
    session.add(parent_row)
    await session.flush()
    child_row = Child(name=child, parent_id=parent_row.id)
    session.add(child_row)
    await session.flush()
    grandchild_row = Grandchild(name=grandchild, parent_id=child_row.id)
    session.add(grandchild_row)
    await session.flush()
    grandchild_id = grandchild_row.id
    await session.commit()
    found = (await session.execute(_joined(grandchild_id))).one()
    assert tuple(found) == (grandchild, child, parent, payload)


def _joined(grandchild_id: int) -> Select[tuple[str, str, str, dict[str, Any]]]:
    """The read-back: the grandchild with its child and parent, over two joins."""
    return (
        select(Grandchild.name, Child.name, Parent.name, Parent.payload)
        .join(Child, Child.id == Grandchild.parent_id)
        .join(Parent, Parent.id == Child.parent_id)
        .where(Grandchild.id == grandchild_id)
    )
