"""Where a cluster's files live, and how concurrent test runs keep out of each other's way.

Each run takes the first free *slot* of its cluster: ``slot-<n>/`` beside ``slot-<n>.lock``. An
flock on the lock file marks the slot taken; the kernel drops it when the process dies, however it
dies, so a crashed run never keeps a slot from the next one. The slot's data folder survives the
run, which is what lets templates built by one run serve the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from unmocked.errors import ServerError
from unmocked.servers import _process
from unmocked.servers._process import Account

_SHM = Path("/dev/shm")
_SHM_MINIMUM_FREE = 1 << 30  # a cluster with a few templates fits; fuller RAM is better left alone
_MAX_SLOTS = 64
_CACHE_MARK = "cache_dir"  # in each data root: the cache folder it belongs to, for the sweep


def data_root(cache_dir: Path, account: Account | None) -> Path:
    """The folder for the data of clusters that belong to ``cache_dir``: RAM when there is room.

    Data in ``/dev/shm`` skips the disk entirely; fsync is off anyway, so nothing is lost but
    time. The folder is per user and per cache folder, so a new cache folder means new clusters.
    """
    # The cache folder must exist: its existence is what keeps the sweep off this data.
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_key = hashlib.sha256(str(cache_dir.resolve()).encode()).hexdigest()[:8]
    mode = 0o700 if account is None else 0o711
    if _SHM.is_dir() and shutil.disk_usage(_SHM).free >= _SHM_MINIMUM_FREE:
        base = _SHM / f"unmocked-{os.getuid()}"
    elif account is None or _traversable(cache_dir):
        return own_dir(cache_dir / "data", mode)
    else:
        # The cache is somewhere the server's account cannot reach (under /root, say).
        base = Path("/var/tmp") / f"unmocked-{os.getuid()}"
    root = base / cache_key
    if not root.is_dir():
        own_dir(base, mode)
        _sweep_orphans(base)
        own_dir(root, mode)
        (root / _CACHE_MARK).write_text(str(cache_dir.resolve()))
    return own_dir(root, mode)


def _sweep_orphans(base: Path) -> None:
    """Delete the data of cache folders that are gone (pytest's tmp_path ones), unless in use.

    Data in /dev/shm costs RAM until the next reboot; a cache folder nobody can name again would
    otherwise keep its clusters there forever. Only the renames happen before we go on: deleting
    a cluster's thousands of files takes a tenth of a second or more, which the run that found
    them need not wait for, so a daemon thread does it. A run that ends first leaves the rest to
    the next sweep.
    """
    trash: list[Path] = []
    for root in base.iterdir():
        try:
            if root.name.endswith(".deleted"):
                trash.append(root)  # a sweep that did not finish
            elif not Path((root / _CACHE_MARK).read_text()).exists():
                trash += _set_aside_unless_in_use(root)
        except OSError:
            continue  # not ours to judge, being made right now, or swept by another run
    if trash:
        threading.Thread(target=_delete, args=(trash,), daemon=True).start()


def _set_aside_unless_in_use(root: Path) -> list[Path]:
    """``root`` renamed to ``<root>.deleted``, or nothing when a server still runs there."""
    with contextlib.ExitStack() as held:
        for lock in root.glob("*/slot-*.lock"):
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            held.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []  # a server runs there: its cache folder was deleted under it
        trash = root.with_name(f"{root.name}.deleted")
        root.rename(trash)  # one step, so no run ever sees a half-deleted cluster
    return [trash]


def _delete(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)  # another sweep may be deleting it too


def own_dir(path: Path, mode: int) -> Path:
    """Make ``path`` (and its parents) and check that it is ours, not a trap in a shared folder.

    /dev/shm and /var/tmp are writable by everyone: a folder someone else made there, or a symlink
    they planted, must not receive our data.
    """
    path.mkdir(parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        raise ServerError(
            f"{path} belongs to another user (or is a symlink), so unmocked will not keep "
            "PostgreSQL's files there. Remove it, or set UNMOCKED_CACHE_DIR to another place."
        )
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
    return path


def _traversable(path: Path) -> bool:
    """True when any account may pass through every existing folder on the way to ``path``."""
    return all(
        folder.stat().st_mode & stat.S_IXOTH for folder in (path, *path.parents) if folder.exists()
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` for the block: one process at a time does the work."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class Slot:
    """One data folder of a cluster, ours while we hold its lock."""

    folder: Path
    lock_fd: int
    account: Account | None
    released: bool = field(default=False)

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def clear_leftovers(self) -> None:
        """Stop a postmaster a dead owner left on this data folder; drop files it left behind.

        Without PR_SET_PDEATHSIG (macOS) a killed run's server keeps running; it holds the data
        folder, so it must go before ours starts.
        """
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        if pid > 0 and _process.is_postmaster_of(pid, self.data_dir):
            _process.stop_stray(pid)
            if _process.is_alive(pid):
                raise ServerError(
                    f"A PostgreSQL server left by an earlier run (pid {pid}) still holds "
                    f"{self.data_dir} and would not stop. Stop it (kill -9 {pid}) and run again."
                )
        elif pid > 0 and _process.is_alive(pid):
            # The pid was reused by some other process; PostgreSQL would refuse to start.
            pid_file.unlink(missing_ok=True)
        # A dead pid is left for PostgreSQL itself, which then checks that no orphaned backend
        # still uses the old shared memory before it removes the file.
        for socket_file in self.folder.glob(".s.PGSQL.*"):
            socket_file.unlink(missing_ok=True)

    def release(self) -> None:
        """Free the slot for another run. Safe to call twice."""
        if not self.released:
            self.released = True
            os.close(self.lock_fd)


def claim_slot(cluster_folder: Path, account: Account | None) -> Slot:
    """Take the first free slot of the cluster in ``cluster_folder``; keep it until released."""
    own_dir(cluster_folder, 0o700 if account is None else 0o711)
    for number in range(_MAX_SLOTS):
        lock = cluster_folder / f"slot-{number}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            folder = cluster_folder / f"slot-{number}"
            folder.mkdir(mode=0o700, exist_ok=True)
            if account is not None:
                os.chown(folder, account.uid, account.gid)
        except BaseException:
            os.close(fd)
            raise
        return Slot(folder, fd, account)
    raise ServerError(
        f"All {_MAX_SLOTS} slots in {cluster_folder} are taken by running test sessions. Stop "
        "some of them, or remove stale folders there when no tests run."
    )
