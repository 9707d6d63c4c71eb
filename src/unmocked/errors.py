"""The exceptions and the warning unmocked raises: one tree, each message written for a person.

Every message says what happened, where, and what to do next, in one short paragraph, and never
carries a password (see :func:`unmocked.urls.redact`). Code raises the most specific class::

    Exception
    └── UnmockedError             anything unmocked raises on purpose
        ├── ConfigurationError    a setting (ini key, flag, UNMOCKED_* variable) cannot be used
        ├── FixtureError          a test asked for fixtures in a way that cannot be served
        ├── ServerError           no PostgreSQL server could be found or started
        ├── MongoError            no MongoDB server (or no pymongo) for a mongo fixture
        ├── MigrationError        the migrations failed while building a template; nothing cached
        ├── MigrationCheckError   the Alembic migrations are not ready to ship (check_migrations)
        ├── DatabaseError         a database unmocked manages could not be made, cloned or dropped
        └── LeakError             a pg_url test left connections open (unmocked_leaks = fail)

    UserWarning
    └── UnmockedWarning           every warning unmocked emits; -W error::unmocked.UnmockedWarning

The pytest plugin translates them at its boundary only: ``UsageError`` for a setting, a one-
paragraph ``Failed`` for a test. Exceptions that never reach users (a test that ended the outer
transaction itself, an Alembic step that failed) are private signals of the modules that raise
and catch them, not part of this tree.
"""

from __future__ import annotations


class UnmockedError(Exception):
    """Base class of every error unmocked raises on purpose."""


class ConfigurationError(UnmockedError):
    """A setting (ini key, command-line flag or environment variable) cannot be used as given."""


class FixtureError(UnmockedError):
    """A test asked for fixtures in a way unmocked cannot serve (two rollback connections, an async
    fixture without an async test runner, a factory with no session bound)."""


class ServerError(UnmockedError):
    """No PostgreSQL server could be found or started, or the one in use died."""


class MongoError(UnmockedError):
    """No MongoDB server could be found or started for a mongo fixture, or pymongo is missing."""


class MigrationError(UnmockedError):
    """The migrations failed while building a template; nothing was cached."""


class MigrationCheckError(UnmockedError):
    """The Alembic migrations are not ready: a step fails, a downgrade leaves something behind, or
    the migrated schema differs from the models."""


class DatabaseError(UnmockedError):
    """A database unmocked manages could not be created, cloned or dropped."""


class LeakError(UnmockedError):
    """A ``pg_url`` test left connections to its database open, and ``unmocked_leaks`` is
    ``fail``; unmocked ended them."""


class UnmockedWarning(UserWarning):
    """Something a test did that unmocked had to work around, or could not undo: read it."""
