"""The exported database: a clone of the template, the variables naming it, and its clean-up.

``unmocked run`` and the ``unmocked_export_env`` pytest option both give a suite that knows nothing
of unmocked a migrated database of its own, named by ``DATABASE_URL``, the libpq variables and the
user's templates. When the export ends, the database is dropped, and so is whatever the suite
created itself on a server unmocked started (see :mod:`unmocked.export.leftovers`).
"""

from __future__ import annotations

from collections.abc import Sequence

from unmocked import cluster_objects
from unmocked.export import leftovers
from unmocked.export.variables import database_variables, empty_templates
from unmocked.resources import Closeable
from unmocked.session import UnmockedSession


class ExportedDatabase(Closeable):
    """A database cloned from the session's template, and the variables that name it.

    With ``watch_leftovers``, databases and roles that appear on the server while the export lives
    are removed on :meth:`close` (server unmocked started) or listed in :attr:`notes` (server
    given by URL, where only what unmocked created may be dropped).
    """

    def __init__(
        self,
        session: UnmockedSession,
        templates: Sequence[tuple[str, str]] = (),
        watch_leftovers: bool = True,
    ) -> None:
        self.session = session
        admin = session.admin
        self._before = cluster_objects.snapshot(admin) if watch_leftovers else None
        self.database: str | None = session.clone_database("env")
        self.variables = database_variables(session.server.url, self.database, templates)
        left_out = empty_templates(session.server.url, self.database, templates)
        self.left_out = (
            "not exported, empty on this server (its URL carries no password): "
            + ", ".join(left_out)
            if left_out
            else None
        )
        """The line naming the templates left out because they are empty here, if any."""
        self.notes: list[str] = []
        """What people should know after the export ended, one line each."""

    def close(self) -> None:
        if self.database is None:
            return
        self.session.drop_database(self.database)
        self.database = None
        if self._before is None:
            return
        server = self.session.server
        if server.owned:
            removed = leftovers.remove(self.session.admin, server.url, self._before)
            self.notes += _listed("removed what the suite created", removed)
        else:
            left = leftovers.new_since(self.session.admin, self._before)
            self.notes += _listed(
                "left on the server (unmocked drops only its own databases there)", left
            )


def _listed(what: str, found: leftovers.Leftovers) -> list[str]:
    lines = []
    if found.databases:
        lines.append(f"{what}: database(s) {', '.join(sorted(found.databases))}")
    if found.roles:
        lines.append(f"{what}: role(s) {', '.join(sorted(found.roles))}")
    return lines
