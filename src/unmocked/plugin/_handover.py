"""The xdist hand-over: the controller starts one server for the workers, and only when their
collection shows a test that asks for a database.

Only the workers collect, and they are given their ``workerinput`` before they do: too early to
carry a server the controller should start only if some test needs it. So the controller makes a
private folder for the run, names it in ``workerinput``, and the rest goes through files there:

1. a worker whose collected tests ask for a database leaves ``wanted`` in it, before xdist tells
   the controller that its collection finished;
2. the controller, told so (``pytest_xdist_node_collection_finished``, before any test is handed
   out), starts the server once, from its main thread (the server dies with that thread), and
   leaves it described in ``server.json``, or the paragraph that says why it could not start in
   ``error.txt``;
3. a worker's session reads the folder (:meth:`Handover.server`) when it first needs the server:
   it attaches to the server, or each test that needs a database fails with that paragraph.
   When nothing is there (no collected test seemed to need a database, yet one asked), the
   worker starts a server of its own, as a run without xdist would.

The controller stops the server and removes the folder when the run ends. The folder holds the
server's URL and its secret, so it and its files are private to us (0700 and 0600).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from unmocked.errors import ServerError
from unmocked.export.variables import server_from_json, server_to_json
from unmocked.resources import Closeable
from unmocked.servers import Server

_WANTED = "wanted"
_SERVER = "server.json"
_ERROR = "error.txt"


class Handover(Closeable):
    """The run's hand-over folder; the controller's (``made``) removes it on :meth:`close`."""

    def __init__(self, folder: Path, owned: bool = False) -> None:
        self.folder = folder
        self._owned = owned

    @classmethod
    def made(cls) -> Handover:
        """A new private folder, for the controller."""
        return cls(Path(tempfile.mkdtemp(prefix="unmocked-xdist-")), owned=True)

    # -- the worker's side --------------------------------------------------------------------

    def want(self) -> None:
        """Ask the controller for the server (a worker whose tests need a database)."""
        self._write(_WANTED, "")

    def server(self) -> Server | None:
        """The server the controller started; None when it started none.

        Raises :class:`ServerError` with the controller's paragraph when it could not start one.
        """
        error = self._read(_ERROR)
        if error is not None:
            raise ServerError(error)
        described = self._read(_SERVER)
        return server_from_json(described) if described is not None else None

    # -- the controller's side ----------------------------------------------------------------

    @property
    def wanted(self) -> bool:
        return (self.folder / _WANTED).exists()

    @property
    def answered(self) -> bool:
        """True once :meth:`give` or :meth:`refuse` was called."""
        return (self.folder / _SERVER).exists() or (self.folder / _ERROR).exists()

    def give(self, server: Server) -> None:
        self._write(_SERVER, server_to_json(server))

    def refuse(self, error: str) -> None:
        """Tell the workers why there is no server: each test that needs one fails with it."""
        self._write(_ERROR, error)

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._owned = False

    # -- files --------------------------------------------------------------------------------

    def _write(self, name: str, text: str) -> None:
        """Write ``name`` whole or not at all: a reader never sees half of it."""
        partial = self.folder / f"{name}.{os.getpid()}.partial"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        with os.fdopen(os.open(partial, flags, 0o600), "w") as out:
            out.write(text)
        os.replace(partial, self.folder / name)

    def _read(self, name: str) -> str | None:
        try:
            with os.fdopen(os.open(self.folder / name, os.O_RDONLY | os.O_NOFOLLOW)) as found:
                return found.read()
        except FileNotFoundError:
            return None
