"""Running code in a second thread, as a second client of the database would."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connection, connections

T = TypeVar("T")


def own_connection(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` run in another thread, on its own Django connection, closed afterwards.

    Django opens one connection per thread and closes it only at the end of a request; a test's
    thread must close it itself, or it outlives the test's database.
    """

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    return run


def backends_waiting_for_a_lock() -> int:
    """How many sessions on the test's database are blocked on a lock right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


def backend_pid() -> int:
    """The PostgreSQL session behind this thread's Django connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])
