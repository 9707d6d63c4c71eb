"""factory_boy factories that write to the test's SQLAlchemy session, with no session set globally.

factory_boy's ``SQLAlchemyModelFactory`` needs a session before it can create anything, and the
usual answer is a module-level session every test shares. Here, a factory names
:func:`current_session` as its ``Meta.sqlalchemy_session_factory``; factory_boy calls it on every
create, so each factory (and every ``SubFactory`` and ``RelatedFactory`` it reaches) writes to the
session the running test bound, and to nothing once the test is over::

    class UserFactory(SQLAlchemyModelFactory):
        class Meta:
            model = User
            sqlalchemy_session_factory = current_session
            sqlalchemy_session_persistence = "commit"

The ``factory_session`` fixture binds the test's ``sa_session``, so ``"commit"`` stays inside the
test's rollback; :func:`bound_session` binds any other session (one over ``pg_url``, say).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from unmocked.errors import FixtureError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# A context variable, not a global: an async test's task sees the binding of the test that runs it.
_bound: ContextVar[Session | None] = ContextVar("unmocked_factory_session", default=None)


def current_session() -> Session:
    """The session bound for the running test; for ``Meta.sqlalchemy_session_factory``."""
    session = _bound.get()
    if session is None:
        raise FixtureError(
            "a factory ran with no session bound: request the factory_session fixture in the "
            "test (it binds sa_session), or wrap the code in "
            "unmocked.integrations.factories.bound_session(session). A thread the test starts "
            "does not inherit the binding; create objects in the test's own thread."
        )
    return session


@contextmanager
def bound_session(session: Session) -> Iterator[Session]:
    """Make ``session`` the one :func:`current_session` returns, until the block ends."""
    token = _bound.set(session)
    try:
        yield session
    finally:
        _bound.reset(token)
