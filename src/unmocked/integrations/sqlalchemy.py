"""SQLAlchemy on top of rollback isolation: an Engine and Sessions over the test's connection.

The engine hands out unmocked's rollback connection itself, so a ``Session``'s ``commit()`` and
``rollback()`` (and the pool's rollback when a connection is returned) reach the same unit-of-work
savepoints as plain psycopg code: deferred constraints are checked on commit, nothing survives the
test, and a test that uses both ``pg`` and ``sa_session`` sees one transaction, not two.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from unmocked.isolation import RollbackConnection

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

_engines: weakref.WeakKeyDictionary[RollbackConnection, Engine] = weakref.WeakKeyDictionary()


def rollback_engine(conn: RollbackConnection) -> Engine:
    """An Engine whose only connection is ``conn`` (made once per connection, then reused)."""
    engine = _engines.get(conn)
    if engine is None:
        import sqlalchemy
        from sqlalchemy.pool import StaticPool

        engine = sqlalchemy.create_engine(
            "postgresql+psycopg://", creator=lambda: conn, poolclass=StaticPool
        )
        _engines[conn] = engine
    return engine
