"""Where unmocked keeps files, and the checks that make each place safe on a shared machine.

Three places: the cache folder (``unmocked_cache_dir``: ``unmocked up``'s record, pointers to the
others), the data root (the clusters' files, in RAM under /dev/shm when there is room) and, as
root, the copy of the binaries the server's account can run. /dev/shm, /tmp and /var/tmp are open
to every account, so:

1. a folder we use must be ours: owned by us, not a link, not writable by others, on a path whose
   folders nobody else may rename (:func:`checked_dir`, :func:`cache_folder`);
2. a well-known name another account took first is not an error: we make a private folder beside
   it and remember it in the cache folder, saying so once (:func:`ours_or_private`);
3. files of ours are read and written without following links, and only when ours
   (:func:`read_private`, :func:`write_private`); files the server's account controls are read as
   untrusted: no link, a regular file, bounded in size, never blocking (:func:`read_untrusted`).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from unmocked.errors import ServerError

_UNTRUSTED_READ_LIMIT = 64 * 1024


class NotOurs(ServerError):
    """A folder or file unmocked would use belongs to another account, or is a link."""


def checked_dir(path: Path, mode: int) -> Path:
    """Make ``path`` (and its parents) with ``mode`` and check that it is ours, not a trap.

    A folder someone else made, or a symlink they planted, must not receive our files; a folder of
    ours with looser permissions is tightened to ``mode``.
    """
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        owner = "is a symbolic link" if stat.S_ISLNK(info.st_mode) else _owned_by(info)
        raise NotOurs(
            f"{path} {owner}, so unmocked will not keep its files there. Remove it, or point "
            "UNMOCKED_CACHE_DIR at a folder of your own."
        )
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode, follow_symlinks=False)
    return path


def cache_folder(cache_dir: Path) -> Path:
    """The cache folder, made 0700 if new, once it is shown to be ours on a path nobody can change.

    The folder holds ``unmocked up``'s record (a URL with the cluster's secret) and locks root
    takes: a planted record or link there would send root to another server or make it write
    where the link points. Every folder above it must be ours or root's, and not writable by
    others unless sticky (as /tmp is), so nobody can swap the folder for theirs.
    """
    path = cache_dir.expanduser().resolve()
    for folder in path.parents:
        try:
            info = folder.stat()
        except FileNotFoundError:
            continue  # made below, by us
        except OSError as error:
            raise NotOurs(
                f"The cache folder {path} lies in {folder}, which cannot be read "
                f"({error.strerror}). Point UNMOCKED_CACHE_DIR at a folder in your home."
            ) from None
        writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if info.st_uid not in (0, os.geteuid()) or (
            writable_by_others and not info.st_mode & stat.S_ISVTX
        ):
            raise NotOurs(
                f"The cache folder {path} lies in {folder}, which {_owned_by(info)} and may be "
                "changed by others, so a record unmocked keeps there could be swapped. Point "
                "UNMOCKED_CACHE_DIR at a folder in your home."
            )
    if not path.exists():
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise NotOurs(
                f"The cache folder {path} cannot be made ({error.strerror}). Point "
                "UNMOCKED_CACHE_DIR at a folder of your own."
            ) from None
    info = path.lstat()
    if info.st_uid != os.geteuid():
        raise NotOurs(
            f"The cache folder {path} {_owned_by(info)}, so unmocked will not trust what it "
            "finds there. Point UNMOCKED_CACHE_DIR at a folder of your own."
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
    return path


def ours_or_private(well_known: Path, mode: int, cache: Path, pointer: str) -> Path:
    """``well_known`` when it is ours (or free), else a private folder beside it.

    Another account may make ``/dev/shm/unmocked-<uid>`` first, by mistake or to lock us out.
    Then a folder with a random name is made next to it and its name kept in ``cache/pointer``, so
    later runs find the same clusters; the run says so once.
    """
    try:
        return checked_dir(well_known, mode)
    except NotOurs:
        pass
    remembered = read_private(cache / pointer)
    if remembered:
        candidate = Path(remembered.strip())
        if candidate.parent == well_known.parent and candidate.name.startswith(well_known.name):
            try:
                if candidate.is_dir():
                    return checked_dir(candidate, mode)
            except NotOurs:
                pass
    private = Path(tempfile.mkdtemp(prefix=f"{well_known.name}-", dir=well_known.parent))
    os.chmod(private, mode)
    write_private(cache / pointer, str(private))
    print(
        f"unmocked: {well_known} belongs to another account, so unmocked uses {private} instead "
        f"(remembered in {cache / pointer}).",
        file=sys.stderr,
    )
    return private


def read_private(path: Path) -> str | None:
    """The text of a file of ours, or None when there is none.

    Raises :class:`NotOurs` for a link or a file another account owns or may write: something
    planted, not a record to act on.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise NotOurs(f"{path} cannot be opened safely ({error.strerror}); remove it.") from None
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.geteuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            raise NotOurs(
                f"{path} {_owned_by(info)} or is not a plain file of ours, so unmocked will not "
                "act on it. Remove it and run again."
            )
        return os.read(fd, max(info.st_size, 1)).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by us alone, replacing it whole (never through a link).

    Readers see the old text or the new one: it is written beside and renamed into place.
    """
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(
        partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(partial, path)


def remembered(memo_file: Path, key: str, compute: Callable[[], str]) -> str:
    """``compute()``, kept in the JSON object ``memo_file`` (a file of ours) under ``key``.

    For answers about programs that cost a process to get and only change with the program
    (its version, its digest), so that the key must name what the answer depends on. A memo
    that cannot be read safely is started afresh.
    """
    try:
        memo: dict[str, str] = json.loads(read_private(memo_file) or "{}")
    except (ValueError, NotOurs):
        memo = {}
    if key not in memo:
        memo[key] = compute()
        write_private(memo_file, json.dumps(memo, indent=1))
    return memo[key]


def read_untrusted(path: Path, limit: int = _UNTRUSTED_READ_LIMIT) -> str:
    """The last ``limit`` bytes of a file the server's account controls (its log, postmaster.pid).

    Root reads these, so a link planted in their place must not make root read (and print) another
    file, and a FIFO must not make it wait forever: OSError for anything but a plain file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a plain file")
        if info.st_size > limit:
            os.lseek(fd, info.st_size - limit, os.SEEK_SET)
        return os.read(fd, limit).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def verify_tree(top: Path) -> str | None:
    """None when every file under ``top`` is ours and nobody else may change it, else why not.

    For the binaries root runs the server from: a folder another account made, or a file it may
    write, would let it choose what runs.
    """
    for folder, folders, files in os.walk(top):
        for name in [folder, *(os.path.join(folder, entry) for entry in [*folders, *files])]:
            info = os.lstat(name)
            if info.st_uid != os.geteuid():
                return f"{name} {_owned_by(info)}"
            if stat.S_ISLNK(info.st_mode):
                target = os.path.realpath(name)
                if os.path.commonpath([target, str(top)]) != str(top):
                    return f"{name} links outside {top}, to {target}"
            elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return (
                    f"{name} may be changed by other accounts (mode {stat.filemode(info.st_mode)})"
                )
    return None


def _owned_by(info: os.stat_result) -> str:
    return f"belongs to uid {info.st_uid}, not to you (uid {os.geteuid()})"


def tail(log: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a server's ``log``, for an error that says why it stopped."""
    try:
        text = read_untrusted(log)
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(the log is empty)"
