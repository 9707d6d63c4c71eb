"""unmocked: a real, isolated PostgreSQL database for every test, as fast as a mock.

The pytest plugin (:mod:`unmocked.plugin`) is the usual way in; everything it does is also
available from plain Python through :class:`UnmockedSession`::

    from unmocked import Settings, UnmockedSession

    with UnmockedSession(Settings(migrations="migrations")) as session:
        with session.fresh_database() as url:
            ...  # a migrated database of your own, dropped afterwards
"""

from __future__ import annotations

from unmocked.errors import (
    ConfigurationError,
    DatabaseError,
    FixtureError,
    LeakError,
    MigrationCheckError,
    MigrationError,
    ServerError,
    UnmockedError,
    UnmockedWarning,
)
from unmocked.isolation import AsyncRollbackConnection, RollbackConnection
from unmocked.servers import RunningServer, Server
from unmocked.session import UnmockedSession
from unmocked.settings import Settings
from unmocked.urls import DatabaseURL

__all__ = [
    "AsyncRollbackConnection",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseURL",
    "FixtureError",
    "LeakError",
    "MigrationCheckError",
    "MigrationError",
    "RollbackConnection",
    "RunningServer",
    "Server",
    "ServerError",
    "Settings",
    "UnmockedError",
    "UnmockedSession",
    "UnmockedWarning",
]
