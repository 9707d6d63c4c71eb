"""How unmocked runs PostgreSQL's programs: as which account, tied to our life, stopped for sure.

PostgreSQL refuses to run as root (:mod:`~unmocked.servers._as_root` picks who it runs as), and a
server left running after its test run is a leak that outlives every clean-up hook. This module
owns switching accounts and starting and stopping processes, so
:mod:`~unmocked.servers.binaries` can think only about clusters.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from unmocked.processes import die_with_parent


@dataclass(frozen=True)
class Account:
    """The unprivileged account PostgreSQL runs as when unmocked itself runs as root."""

    name: str
    uid: int
    gid: int


def _child_setup(
    account: Account | None, die_with_us: bool = True, log: Path | None = None
) -> Callable[[], None]:
    """What the child does between fork and exec: drop root, open its ``log`` as stdout and
    stderr, then (unless told not to) ask to die with us.

    The log is opened after the switch of account, so a link the account planted where the log
    goes leads nowhere that account could not write anyway. Dying with us sends SIGINT,
    PostgreSQL's fast shutdown (see :mod:`unmocked.processes`); it comes after setuid, because the
    kernel clears it when credentials change.
    """
    tie_to_parent = die_with_parent(signal.SIGINT) if die_with_us else None

    def setup() -> None:
        if account is not None:
            os.setgroups([])
            os.setgid(account.gid)
            os.setuid(account.uid)
        if log is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(log)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        if tie_to_parent is not None:
            tie_to_parent()

    return setup


def run(
    argv: Sequence[str | Path], account: Account | None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a short program (initdb, ``postgres --version``) as ``account``; capture its output."""
    return subprocess.run(
        [str(arg) for arg in argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=300,
        preexec_fn=_child_setup(account),
    )


def spawn(
    argv: Sequence[str | Path],
    account: Account | None,
    cwd: Path,
    log: Path,
    detached_holding: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived server as ``account``, our child, which dies when we do, writing ``log``.

    Its own session keeps a Ctrl-C in the terminal from reaching it directly: we stop it ourselves,
    in order, after the tests that use it. With ``detached_holding`` (a file descriptor) it is not
    tied to our life (``unmocked up``) and inherits that descriptor, so a lock held through it
    lasts as long as the server does.
    """
    return subprocess.Popen(
        [str(arg) for arg in argv],
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        start_new_session=True,
        pass_fds=() if detached_holding is None else (detached_holding,),
        preexec_fn=_child_setup(account, die_with_us=detached_holding is None, log=log),
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, for a server we start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server we started: fast shutdown, then immediate, then SIGKILL if it still hangs."""
    for sig, grace in ((signal.SIGINT, 15.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_stray(pid: int, signals: Sequence[int] = (signal.SIGQUIT, signal.SIGKILL)) -> None:
    """Stop a postmaster that is not our child (its owner died): immediate shutdown, then kill.

    ``unmocked down`` starts with SIGINT instead: a fast shutdown leaves a clean cluster.
    """
    for sig in signals:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not is_alive(pid):
            return


def is_alive(pid: int) -> bool:
    """True when ``pid`` runs; a zombie (exited, not yet reaped by its new parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def is_postmaster_of(pid: int, data_dir: Path, uid: int) -> bool:
    """True when ``pid`` is a live postgres of account ``uid`` whose data folder is ``data_dir``.

    A pid in a stale postmaster.pid may since belong to any process; only a postgres working in
    this very folder, as the account we run servers as, may be stopped.
    """
    if not is_alive(pid):
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            return (
                (proc / "comm").read_text().strip() == "postgres"
                and proc.stat().st_uid == uid
                and Path(os.readlink(proc / "cwd")) == data_dir.parent.resolve() / data_dir.name
            )
        except OSError:
            return False
    result = subprocess.run(
        ["ps", "-o", "uid=,command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    fields = result.stdout.split(None, 1)
    return (
        len(fields) == 2
        and fields[0] == str(uid)
        and "postgres" in fields[1]
        and str(data_dir) in fields[1]
    )
