"""The hooks that hand the statements code sends to :mod:`unmocked.checks.recording`, one module
per driver: :mod:`.psycopg` (3), :mod:`.asyncpg`, :mod:`.psycopg2`.

1. Each driver is hooked where every path that sends SQL a caller wrote meets, and where none of
   the statements the driver or unmocked send on their own (``BEGIN``, savepoints, the rollback
   fixtures' own) passes.
2. The hooks are installed once per process, for the drivers that are importable (the others
   are never imported): once the collected tests include one that asks for ``queries``, before
   any test runs (psycopg2's connections are hooked as they are made, and Django's is made by
   the first test that uses the database), or else when the fixture is first used.
3. While nobody listens each hook costs one function call and a check of a global.
"""

from __future__ import annotations

import importlib

_DRIVERS = ("psycopg", "asyncpg", "psycopg2")
_installed = False


def install() -> None:
    """Hook the drivers that are importable; again is a no-op."""
    global _installed
    if _installed:
        return
    _installed = True
    for driver in _DRIVERS:
        try:
            hooks = importlib.import_module(f"unmocked.checks.drivers.{driver}")
        except ImportError:  # not installed: the code under test cannot use it either
            continue
        hooks.install()
