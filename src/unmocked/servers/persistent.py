"""The server ``unmocked up`` started: found again by later runs, stopped by ``unmocked down``.

Starting PostgreSQL and building templates is most of a small suite's start-up; a server that
outlives the run pays it once. ``up`` starts the cluster the provider chain would start, detached
(no parent-death signal, holding its own slot lock), and records it in ``<cache>/server.json``.
A run with that cache folder attaches to it when the record names a live postmaster on the recorded
data folder whose provider, version and server settings fit what the run asks for. A run never
stops it; a run killed while attached leaves only databases its lease marks as abandoned, which
the next run (or ``unmocked gc``) drops.

With ``unmocked_provider = docker`` (or ``auto`` finding nothing before Docker), ``up`` starts a
container labelled as detached and records its id; a run attaches when the image it would run is
the recorded one; ``down`` removes the container. Runs and ``unmocked gc`` leave such a container
alone while the record names it, and collect it once none does (see :mod:`.containers`).

The record is never trusted on its own: a server that stopped or crashed, a reboot that emptied
/dev/shm, or a pid since reused by another process all make it stale, and a stale record is removed
under the lock ``up`` and ``down`` take, so it cannot send a run to the wrong server.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

from unmocked.errors import ServerError
from unmocked.servers import RunningServer, Server, _process, known_state, start_from_binaries
from unmocked.servers._as_root import service_account
from unmocked.servers._places import cache_folder, read_private, read_untrusted, write_private
from unmocked.servers._slots import locked
from unmocked.settings import Settings

_STATE_FILE = "server.json"
_LOCK_FILE = "server.lock"


@dataclass(frozen=True)
class Record:
    """What ``up`` wrote down about its server, checked against the live process."""

    server: Server
    pid: int
    started_at: float
    """When the postmaster started (seconds since the epoch), from its ``postmaster.pid``."""
    server_settings: tuple[tuple[str, str], ...]
    container: str | None = None
    """The id of a ``docker`` server's container (``pid`` and ``started_at`` are then the
    engine's for it)."""

    def fits(self, settings: Settings) -> bool:
        """True when a run with ``settings`` would have started a server like this one."""
        return (
            settings.provider in ("auto", self.server.provider)
            and settings.pg_version in (None, self.server.major)
            and settings.server_settings == self.server_settings
            and (self.container is None or _image_for(settings) == self.server.image)
        )


def up(settings: Settings) -> tuple[Record, bool]:
    """Start the server runs with ``settings`` would start, detached; record it for them.

    Returns the record and True, or the record of the server already up and False.
    """
    with _locked(settings.cache_dir):
        found = _live_record(settings.cache_dir, forget_stale=True)
        if found is not None:
            return found, False
        running = start_from_binaries(settings, detached=True)
        server = running.server
        if server.provider == "docker":
            return _record_container(settings, running), True
        assert server.data_dir is not None
        pid, started_at = _postmaster(server.data_dir)
        record = Record(server, pid, started_at, settings.server_settings)
        _write(settings.cache_dir, record)
        return record, True


def _record_container(settings: Settings, running: RunningServer) -> Record:
    """Record the container ``up`` started, then let it outlive this process; removed if that
    fails (until :meth:`.ContainerServer.keep`, closing or exiting removes it)."""
    from unmocked.servers import containers

    assert isinstance(running, containers.ContainerServer)
    try:
        state = containers.detached_state(running.container.id)
        if state is None:
            raise ServerError(f"The container {running.container.name} stopped as it started.")
        record = Record(
            running.server, *state, settings.server_settings, container=running.container.id
        )
        _write(settings.cache_dir, record)
    except BaseException:
        running.close()
        raise
    running.keep()
    return record


def records_container(cache_dir: Path, container_id: str) -> bool:
    """True when the ``up`` record in ``cache_dir`` names that container (``unmocked gc`` and
    runs' collection keep it then). A record unreadable or not ours names none."""
    if not (cache_dir / _STATE_FILE).exists():
        return False  # and no cache folder made where none is
    try:
        return _read(cache_folder(cache_dir) / _STATE_FILE).container == container_id
    except Exception:  # none, half-written, planted (NotOurs), or a folder no longer ours
        return False


def _image_for(settings: Settings) -> str:
    from unmocked.servers.containers import image_for

    return image_for(settings)


def find(settings: Settings) -> Record | None:
    """The live server ``up`` started with this cache folder, or None (removing a stale record)."""
    if not (settings.cache_dir / _STATE_FILE).exists():
        return None  # the common case costs one stat, and no lock
    found = _live_record(settings.cache_dir, forget_stale=False)
    if found is None:
        with _locked(settings.cache_dir):  # ``up`` may have just written a new record
            found = _live_record(settings.cache_dir, forget_stale=True)
    return found


def attach(settings: Settings) -> RunningServer | None:
    """The ``up`` server, when there is one that fits ``settings``; closing it never stops it."""
    found = find(settings)
    if found is None or not found.fits(settings):
        return None
    # Each run that attaches puts back what an earlier run's tests left (see known_state).
    return known_state.restore(RunningServer(found.server))


def down(settings: Settings) -> Record | None:
    """Stop the ``up`` server (fast shutdown, then harder) and forget it; None when none runs.

    Its data folder stays: it is the cluster (and templates) later runs reuse, as after any run.
    """
    with _locked(settings.cache_dir):
        found = _live_record(settings.cache_dir, forget_stale=True)
        if found is not None and found.container is not None:
            from unmocked.servers import containers

            containers.remove_detached(found.container)
            (settings.cache_dir / _STATE_FILE).unlink(missing_ok=True)
        elif found is not None:
            _process.stop_stray(found.pid, (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL))
            if _process.is_alive(found.pid):
                raise ServerError(
                    f"The server `unmocked up` started (pid {found.pid}) would not stop. Stop it "
                    f"(kill -9 {found.pid}) and run `unmocked down` again."
                )
            (settings.cache_dir / _STATE_FILE).unlink(missing_ok=True)
        return found


def _locked(cache_dir: Path) -> AbstractContextManager[None]:
    return locked(cache_folder(cache_dir) / _LOCK_FILE)


def _live_record(cache_dir: Path, forget_stale: bool) -> Record | None:
    """The recorded server if it still runs as recorded, else None.

    ``forget_stale`` deletes a stale record, which is safe only under ``_locked``: without it,
    ``up`` could write a new record between our look and the deletion.
    """
    path = cache_folder(cache_dir) / _STATE_FILE
    try:
        record = _read(path)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        record = None  # half-written by an older version, or edited: not a server to trust
    if record is not None and _is_running(record):
        return record
    if forget_stale:
        path.unlink(missing_ok=True)
    return None


def _is_running(record: Record) -> bool:
    """True when the recorded pid is a postmaster on the recorded data folder, started then; for a
    container, when the engine runs it with the recorded pid and start time."""
    if record.container is not None:
        from unmocked.servers import containers

        return containers.detached_state(record.container) == (record.pid, record.started_at)
    data_dir = record.server.data_dir
    account = service_account()
    uid = account.uid if account is not None else os.geteuid()
    if data_dir is None or not _process.is_postmaster_of(record.pid, data_dir, uid):
        return False
    try:
        return _postmaster(data_dir) == (record.pid, record.started_at)
    except ServerError:
        return False


def _postmaster(data_dir: Path) -> tuple[int, float]:
    """``(pid, start time)`` from the data folder's ``postmaster.pid`` (its 1st and 3rd lines)."""
    try:
        lines = read_untrusted(data_dir / "postmaster.pid").splitlines()
        return int(lines[0]), float(lines[2])
    except (OSError, ValueError, IndexError):
        raise ServerError(f"{data_dir} has no readable postmaster.pid") from None


def _write(cache_dir: Path, record: Record) -> None:
    fields = {**asdict(record), "server": record.server.to_fields()}
    # It holds the URL with the cluster's secret: readable by us alone (and replaced whole, so
    # readers see the old record or the new one).
    write_private(cache_folder(cache_dir) / _STATE_FILE, json.dumps(fields, indent=2))


def _read(path: Path) -> Record:
    """The record at ``path``; a file another account planted there raises NotOurs."""
    text = read_private(path)
    if text is None:
        raise FileNotFoundError(path)
    fields = json.loads(text)
    return Record(
        server=Server.from_fields(fields["server"]),
        pid=int(fields["pid"]),
        started_at=float(fields["started_at"]),
        server_settings=tuple((str(name), str(value)) for name, value in fields["server_settings"]),
        container=str(fields["container"]) if fields.get("container") else None,
    )


def uptime(record: Record) -> float:
    """Seconds since the recorded server started."""
    return max(0.0, time.time() - record.started_at)
