"""The pytest fixture that binds factory_boy factories to the test's SQLAlchemy session.

Wiring only: :mod:`unmocked.integrations.factories` does the binding. Importing this module needs
neither SQLAlchemy nor factory_boy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@pytest.fixture
def factory_session(sa_session: Session) -> Iterator[Session]:
    """The test's ``sa_session``, which every factory using ``current_session`` writes to.

    A factory's ``"commit"`` persistence commits the session's unit of work, inside the test's
    rollback like any other commit: nothing it creates is visible to the next test.
    """
    from unmocked.integrations.factories import bound_session

    with bound_session(sa_session) as session:
        yield session
