"""The hooks that hand the statements code sends to :mod:`unmocked.checks.recording`, one module
per driver: :mod:`.psycopg` (3), :mod:`.asyncpg`, :mod:`.psycopg2`.

1. Each driver is hooked where every path that sends SQL a caller wrote meets, and where none of
   the statements the driver or unmocked send on their own (``BEGIN``, savepoints, the rollback
   fixtures' own) passes.
2. The hooks are installed once per process: once the collected tests include one that asks for
   ``queries``, before any test runs (psycopg2's connections are hooked as they are made, and
   Django's is made by the first test that uses the database), or else when the fixture is first
   used. A driver imported by then is hooked at once; one that is not is hooked the moment it is
   first imported (:class:`_HookedOnImport`), so a run never pays for importing a driver it does
   not use (asyncpg and psycopg2 take ~30 ms), and one that is not installed is never imported.
3. While nobody listens each hook costs one function call and a check of a global.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

_DRIVERS = ("psycopg", "asyncpg", "psycopg2")
_installed = False


def install() -> None:
    """Hook the drivers that are imported, and the others once they are; again is a no-op."""
    global _installed
    if _installed:
        return
    _installed = True
    later = []
    for driver in _DRIVERS:
        if driver in sys.modules:
            _hook(driver)
        else:
            later.append(driver)
    if later:
        sys.meta_path.insert(0, _HookedOnImport(later))


def _hook(driver: str) -> None:
    try:
        hooks = importlib.import_module(f"unmocked.checks.drivers.{driver}")
    except ImportError:  # not installed: the code under test cannot use it either
        return
    hooks.install()


class _HookedOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it has the drivers' own loader hook each one once it is imported."""

    def __init__(self, drivers: list[str]) -> None:
        self._pending = set(drivers)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._pending:
            return None
        self._pending.discard(fullname)  # also keeps the look-up below from coming back here
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if loader is None:
            return None  # not installed: the import fails as it would have
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            _hook(fullname)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
