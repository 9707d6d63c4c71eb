"""Where a cluster's files live, and how concurrent test runs keep out of each other's way.

Each run takes the first free *slot* of its cluster: ``slot-<n>/`` beside ``slot-<n>.lock``. An
flock on the lock file marks the slot taken; the kernel drops it when the process dies, however it
dies, so a crashed run never keeps a slot from the next one. The slot's data folder survives the
run, which is what lets templates built by one run serve the next.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from unmocked.errors import ServerError
from unmocked.servers import _process
from unmocked.servers._places import (
    NotOurs,
    cache_folder,
    checked_dir,
    ours_or_private,
    read_private,
    read_untrusted,
    write_private,
)
from unmocked.servers._process import Account

_SHM = Path("/dev/shm")
_SHM_MINIMUM_FREE = 1 << 30  # a cluster with a few templates fits; fuller RAM is better left alone
_MAX_SLOTS = 64
_CACHE_MARK = "cache_dir"  # in each data root: the cache folder it belongs to, for the sweep
# A free slot unused for this long goes (its templates are rebuilt in a second or so if needed).
IDLE_SLOT_SECONDS = 3 * 24 * 3600
# Free slots kept per cluster beyond that: concurrent runs come back, and each slot holds templates.
KEEP_IDLE_SLOTS = 2


def data_root(cache_dir: Path, account: Account | None) -> Path:
    """The folder for the data of clusters that belong to ``cache_dir``: RAM when there is room.

    Data in ``/dev/shm`` skips the disk entirely; fsync is off anyway, so nothing is lost but
    time. The folder is per user and per cache folder, so a new cache folder means new clusters.
    A well-known folder another account made first is replaced by a private one (see
    :func:`~unmocked.servers._places.ours_or_private`).
    """
    # The cache folder must exist: its existence is what keeps the sweep off this data.
    cache = cache_folder(cache_dir)
    cache_key = hashlib.sha256(str(cache).encode()).hexdigest()[:8]
    mode = 0o700 if account is None else 0o711
    if _SHM.is_dir() and shutil.disk_usage(_SHM).free >= _SHM_MINIMUM_FREE:
        base = ours_or_private(_SHM / f"unmocked-{os.getuid()}", mode, cache, "ram-folder")
    elif account is None or _traversable(cache):
        return checked_dir(cache / "data", mode)
    else:
        # The cache is somewhere the server's account cannot reach (under /root, say).
        well_known = Path("/var/tmp") / f"unmocked-{os.getuid()}"
        base = ours_or_private(well_known, mode, cache, "disk-folder")
    root = base / cache_key
    if not root.is_dir():
        _sweep_orphans(base)
        checked_dir(root, mode)
        write_private(root / _CACHE_MARK, str(cache))
    return checked_dir(root, mode)


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


def collect_idle(
    root: Path,
    current_format: str,
    keep_recent: int = KEEP_IDLE_SLOTS,
    quiet_seconds: float = 3600,
) -> list[Path]:
    """Give back the RAM or disk of slots nobody uses: return the folders set aside for deletion.

    Every concurrent run adds a slot (a whole cluster, ~55 MB) that stays when the runs end, and
    every change of binaries or of cluster format adds a cluster. A free slot (its lock not held)
    goes when its cluster is of an older format (it will never be started again), when it was
    last used more than :data:`IDLE_SLOT_SECONDS` ago, or when it is past the ``keep_recent``
    most recently used free slots of its cluster and idle for ``quiet_seconds``. Lock files stay:
    a run may be opening one right now, and an unlinked lock would let two runs take one slot.
    """
    now = time.time()
    trash: list[Path] = []
    for cluster in sorted(root.iterdir()):
        if not cluster.is_dir() or cluster.name.endswith(".deleted"):
            continue
        trash += cluster.glob("*.deleted")  # set aside by a run that ended before deleting them
        free: list[tuple[float, Path, int]] = []
        with contextlib.ExitStack() as held:
            for lock in cluster.glob("slot-*.lock"):
                fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                held.callback(os.close, fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use
                folder = lock.with_suffix("")
                if folder.exists():
                    free.append((os.fstat(fd).st_mtime, folder, fd))
            free.sort(reverse=True)
            for rank, (used, folder, _fd) in enumerate(free):
                idle = now - used
                if (
                    not cluster.name.endswith(f"-{current_format}")
                    or idle > IDLE_SLOT_SECONDS
                    or (rank >= keep_recent and idle > quiet_seconds)
                ):
                    trash.append(_set_slot_aside(folder))
    if trash:
        threading.Thread(target=_delete, args=(trash,), daemon=True).start()
    return trash


def held(root: Path) -> list[str]:
    """One line per cluster under ``root``: its slots, how many are in use, the space they hold."""
    lines = []
    for cluster in sorted(root.iterdir()):
        if not cluster.is_dir() or cluster.name.endswith(".deleted"):
            continue
        slots = [folder for folder in cluster.glob("slot-*") if folder.is_dir()]
        busy = 0
        for lock in cluster.glob("slot-*.lock"):
            fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                busy += 1
            finally:
                os.close(fd)
        size = sum(size_of(folder) for folder in slots)
        lines.append(f"{cluster}: {len(slots)} slot(s), {busy} in use, {size / 2**20:.0f} MB")
    return lines


def size_of(folder: Path) -> int:
    """Bytes the files under ``folder`` take (links not followed; unreadable parts count 0)."""
    total = 0
    for top, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


def _set_slot_aside(folder: Path) -> Path:
    """Rename a free slot's folder for deletion and forget its secret and pid (lock held)."""
    trash = folder.with_name(f"{folder.name}.{os.getpid()}.deleted")
    folder.rename(trash)
    for suffix in ("secret", "pid"):
        folder.with_name(f"{folder.name}.{suffix}").unlink(missing_ok=True)
    return trash


def _traversable(path: Path) -> bool:
    """True when any account may pass through every existing folder on the way to ``path``."""
    return all(
        folder.stat().st_mode & stat.S_IXOTH for folder in (path, *path.parents) if folder.exists()
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` for the block: one process at a time does the work."""
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    """Open (or make) a lock file of ours; never through a link, never another account's file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise NotOurs(
            f"{path} is a symbolic link, so unmocked will not lock (or create) what it points "
            "to. Remove it and run again."
        ) from None
    if os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        raise NotOurs(f"{path} belongs to another account; remove it and run again.")
    return fd


@dataclass
class Slot:
    """One data folder of a cluster, ours while we hold its lock.

    Under root the slot folder belongs to the server's account, so nothing root does may depend on
    what that account can change: the slot's secret and the pid of the server we started are kept
    beside it, in the cluster folder, which is ours (``slot-<n>.secret``, ``slot-<n>.pid``).
    """

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

    def _beside(self, suffix: str) -> Path:
        return self.folder.with_name(f"{self.folder.name}.{suffix}")

    def secret(self) -> str | None:
        """The password of the slot's cluster, or None when it has none of ours (a new slot)."""
        try:
            text = read_private(self._beside("secret"))
        except NotOurs:
            self._beside("secret").unlink(missing_ok=True)
            return None
        return text.strip() if text else None

    def keep_secret(self, secret: str) -> None:
        write_private(self._beside("secret"), secret)

    def has_data(self) -> bool:
        """True when the slot holds an initdb'd data folder (a real folder, not a link)."""
        try:
            return stat.S_ISDIR(self.data_dir.lstat().st_mode)
        except FileNotFoundError:
            return False

    def remove_data(self) -> None:
        remove_tree(self.data_dir)

    def note_postmaster(self, pid: int) -> None:
        """Remember the server we started here, the only process :meth:`clear_leftovers` stops."""
        write_private(self._beside("pid"), str(pid))

    def clear_leftovers(self) -> None:
        """Stop a postmaster a dead run of ours left on this data folder; drop its socket files.

        Without PR_SET_PDEATHSIG (macOS) a killed run's server keeps running; it holds the data
        folder, so it must go before ours starts. Only the pid we recorded when we started it is
        ever signalled, and only while it is a postgres of the slot's account on this very data
        folder: never a process named by a file the server's account could write.
        """
        try:
            pid = int((read_private(self._beside("pid")) or "0").strip())
        except (NotOurs, ValueError):
            pid = 0
        uid = self.account.uid if self.account is not None else os.geteuid()
        if pid > 0 and self.has_data() and _process.is_postmaster_of(pid, self.data_dir, uid):
            _process.stop_stray(pid)
            if _process.is_alive(pid):
                raise ServerError(
                    f"A PostgreSQL server left by an earlier run (pid {pid}) still holds "
                    f"{self.data_dir} and would not stop. Stop it (kill -9 {pid}) and run again."
                )
        # A pid file naming a live process that is not that server (a reused pid) would make
        # PostgreSQL refuse to start; a dead one is left to PostgreSQL, which checks that no
        # orphaned backend still uses the old shared memory before it removes the file.
        try:
            named = int(read_untrusted(self.data_dir / "postmaster.pid").split()[0])
        except (OSError, ValueError, IndexError):
            named = 0
        if named > 0 and named != pid and _process.is_alive(named):
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        for socket_file in self.folder.glob(".s.PGSQL.*"):
            socket_file.unlink(missing_ok=True)

    def release(self) -> None:
        """Free the slot for another run. Safe to call twice."""
        if not self.released:
            self.released = True
            os.close(self.lock_fd)


def remove_tree(path: Path) -> None:
    """Remove a folder the server's account may have filled, without following its links.

    (shutil.rmtree works on file descriptors on Linux and refuses a link given as the top.)
    """
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def claim_slot(cluster_folder: Path, account: Account | None) -> Slot:
    """Take the first free slot of the cluster in ``cluster_folder``; keep it until released."""
    checked_dir(cluster_folder, 0o700 if account is None else 0o711)
    for number in range(_MAX_SLOTS):
        fd = _open_lock(cluster_folder / f"slot-{number}.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            os.utime(fd)  # its last use, for collect_idle
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
