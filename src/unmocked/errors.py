"""The exceptions unmocked raises: one hierarchy, each message written for a person.

Every message says what happened, where, and what to do next, in one short paragraph, and never
carries a password (see :func:`unmocked.urls.redact`).
"""

from __future__ import annotations


class UnmockedError(Exception):
    """Base class of every error unmocked raises on purpose."""


class ConfigurationError(UnmockedError):
    """A setting (ini key, command-line flag or environment variable) cannot be used as given."""


class ServerError(UnmockedError):
    """No PostgreSQL server could be found or started."""


class MigrationError(UnmockedError):
    """The migrations failed while building a template; nothing was cached."""


class DatabaseError(UnmockedError):
    """A database unmocked manages could not be created, cloned or dropped."""
