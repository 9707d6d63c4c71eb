"""A database handed to code that reads its connection from the environment.

``unmocked run -- COMMAND`` and the ``unmocked_export_env`` pytest option give a suite that knows
nothing of unmocked a migrated database of its own. The parts, in the order they act:

1. :mod:`~unmocked.export.variables`: the variables that name the database (``DATABASE_URL``,
   ``PGHOST``..., and the user's ``{url:asyncpg}``-style templates);
2. :mod:`~unmocked.export.database`: :class:`ExportedDatabase`, the cloned database and those
   variables, dropped on ``close()``;
3. :mod:`~unmocked.export.leftovers`: what the suite created on the server meanwhile, dropped or
   listed when the export ends;
4. :mod:`~unmocked.export.command`: ``unmocked run``'s supervision of the command (signals, exit
   status, death with us).
"""

from __future__ import annotations

from unmocked.export.database import ExportedDatabase

__all__ = ["ExportedDatabase"]
