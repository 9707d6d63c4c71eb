"""What changes when unmocked runs as root: PostgreSQL refuses to, so an unprivileged account does.

That account needs its own user, files it owns, and binaries it can reach; this module provides
the user and the binaries (the slots chown the files).
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

from unmocked.errors import ServerError
from unmocked.servers import _process
from unmocked.servers._places import ours_or_private, read_private, remembered, verify_tree
from unmocked.servers._process import Account
from unmocked.servers._slots import locked

_SERVICE_ACCOUNT = "unmocked"
_SHARED_BINARIES = Path("/var/tmp/unmocked-binaries")


@functools.cache
def service_account() -> Account | None:
    """The account to run PostgreSQL as: None (ourselves) unless we are root.

    As root, use the system account ``unmocked``, creating it if needed, else ``nobody``. Said on
    stderr when it matters to the person: once per machine, as the account is created (files
    then belong to an account they did not choose; ``pytest -v`` says it on every run), and on
    every run that falls back to ``nobody``, an account other services share.
    """
    if os.geteuid() != 0:
        return None
    entry = _account_entry(_SERVICE_ACCOUNT)
    if entry is None:
        entry = _account_entry("nobody")
        if entry is None:
            return None  # nowhere to go; PostgreSQL's own "cannot be run as root" will explain
        _say(
            f"running PostgreSQL as user {entry.pw_name!r}, because PostgreSQL refuses to run "
            f"as root and the user {_SERVICE_ACCOUNT!r} could not be created (useradd)"
        )
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _say(line: str) -> None:
    print(f"unmocked: {line}", file=sys.stderr)


def _account_entry(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if name == _SERVICE_ACCOUNT and shutil.which("useradd"):
        # Another run may create it at the same moment, so a failure is judged by the look-up after.
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            check=False,
        )
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        if made.returncode == 0:
            _say(
                f"created the system user {name!r} to run PostgreSQL as, because PostgreSQL "
                "refuses to run as root; its files belong to that user"
            )
        return entry
    return None


@functools.cache
def runnable_bindir(bindir: Path, account: Account | None, identity: str, cache: Path) -> Path:
    """``bindir``, or a root-owned, world-readable copy of its installation when ``account``
    cannot run it in place.

    Binaries inside a venv under /root (mode 700) are out of reach of the unprivileged account;
    we copy them once rather than loosen the permissions of the person's folders. The copy is
    named by ``identity`` (what the binaries are, see :func:`binaries_identity`), so reinstalling
    the same wheel reuses it, and it is checked before every use: root runs what is in it, so a
    folder or file another account made or may change there is refused.
    """
    if account is None or _runs_as(bindir, account, cache):
        return bindir
    # The installation is the folder holding bin/, lib/ and share/. A wheel's programs may also
    # load libpq from ../../../<package>.libs (auditwheel's folder beside the package), so the
    # copy of a wheel's installation (<package>/pginstall*) keeps the site-packages layout.
    install = bindir.parent
    top, parts = install.parent, [install.name]
    package = install.parent
    if install.name.startswith("pginstall"):
        top, parts = package.parent, [f"{package.name}/{install.name}"]
        if (top / f"{package.name}.libs").is_dir():
            parts.append(f"{package.name}.libs")
    shared = ours_or_private(_SHARED_BINARIES, 0o755, cache, "binaries-folder")
    copy = shared / identity
    with locked(shared / f"{copy.name}.lock"):
        if not copy.is_dir():
            staging = shared / f"{copy.name}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            for part in parts:
                shutil.copytree(top / part, staging / part, symlinks=True)
            for folder, _, files in os.walk(staging):
                for name in [folder, *(os.path.join(folder, file) for file in files)]:
                    mode = os.lstat(name).st_mode
                    if not os.path.islink(name):
                        os.chmod(name, (mode | 0o444 | (0o111 if mode & 0o100 else 0)) & ~0o022)
            os.chmod(staging, 0o755)
            os.rename(staging, copy)
        os.utime(copy)  # its last use, for `unmocked gc`
    unsafe = verify_tree(copy)
    if unsafe is not None:
        raise ServerError(
            f"unmocked will not run PostgreSQL from {copy}: {unsafe}. Something other than "
            f"unmocked changed it; delete {copy} (as root: rm -r {copy}) and run again."
        )
    runnable = copy / bindir.relative_to(top)
    if not _runs_as(runnable, account):
        raise ServerError(
            f"User {account.name!r} cannot run the PostgreSQL binaries in {bindir}, nor the copy "
            f"unmocked made of them in {copy}. Delete {copy} and run again, or run the tests as "
            "an ordinary user."
        )
    return runnable


def binaries_root(cache: Path) -> Path | None:
    """Where copies of binaries for the server's account live, or None when none was made."""
    remembered = read_private(cache / "binaries-folder")
    if remembered:
        return Path(remembered.strip())
    return _SHARED_BINARIES if _SHARED_BINARIES.is_dir() else None


def collect_unused_copies(copies: Path, unused_seconds: float) -> list[Path]:
    """Remove the copies under ``copies`` no run used for ``unused_seconds``; return them.

    Each copy's modification time is its last use (runnable_bindir touches it). Taken under the
    copy's own lock, so a run about to use it either finds it whole or makes it anew.
    """
    removed = []
    for copy in sorted(entry for entry in copies.iterdir() if entry.is_dir()):
        if copy.name.endswith(".partial") or time.time() - copy.stat().st_mtime < unused_seconds:
            continue
        with locked(copies / f"{copy.name}.lock"):
            shutil.rmtree(copy, ignore_errors=True)
        removed.append(copy)
    return removed


def _runs_as(bindir: Path, account: Account, cache: Path | None = None) -> bool:
    """Whether ``account`` can run the programs in ``bindir``: by running them as it.

    With ``cache``, a yes is remembered there under what it rests on (the account; the owner and
    mode of the programs, of every folder above them and of their installation's folders; the
    programs' sizes and times), so a later start skips the two processes until one of those
    changes. A no is never remembered: it leads to the copy, which is checked anew each time.
    """
    if cache is not None:
        try:
            remembered(
                cache / "binaries.json", _reach(bindir, account), lambda: _probed(bindir, account)
            )
        except (OSError, _CannotRun):
            return False
        return True
    try:
        return all(
            _process.run([bindir / program, "--version"], account, cwd=Path("/")).returncode == 0
            for program in ("postgres", "initdb")
        )
    except (OSError, subprocess.SubprocessError):
        return False


class _CannotRun(Exception):
    """The account cannot run the programs: an answer :func:`_runs_as` does not remember."""


def _probed(bindir: Path, account: Account) -> str:
    if not _runs_as(bindir, account):
        raise _CannotRun
    return "runs"


def _reach(bindir: Path, account: Account) -> str:
    """What ``account``'s running of the programs in ``bindir`` depends on, as a memo's key."""
    programs = [bindir / "postgres", bindir / "initdb"]
    installation = sorted(bindir.parent.iterdir())  # bin, lib, share: the libraries loaded
    places = [*programs, *installation, *bindir.parents]
    shown = []
    for place in places:
        info = place.stat()
        shown.append(f"{place}:{info.st_mode:o}:{info.st_uid}:{info.st_gid}")
    for program in programs:
        info = program.stat()
        shown.append(f"{info.st_size}:{info.st_mtime_ns}")
    return f"runs as {account.uid}:{account.gid} " + " ".join(shown)
