"""Run a command with a database exported into its environment: the work of ``unmocked run``.

The command is our child: it gets the exported variables, the signals sent to us, and (on Linux)
SIGTERM when we die, even by SIGKILL, so it never outlives the server it was given. Its exit status
becomes ours (``128 + N`` when signal N killed it), and whatever it left on a server unmocked
started is removed before we exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

from unmocked.export.database import ExportedDatabase
from unmocked.export.variables import environ_with, server_from_environment, server_variables
from unmocked.processes import die_with_parent
from unmocked.session import UnmockedSession
from unmocked.settings import Settings

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SI_KERNEL = 0x80  # si_code of a signal the terminal sent to the whole foreground process group


def run_command(
    settings: Settings, command: Sequence[str], templates: Sequence[tuple[str, str]]
) -> int:
    """Export a fresh database to ``command``, run it, clean up; return its exit status."""
    # Inside another `unmocked run`: its server, as what it is.
    inherited = server_from_environment(settings, os.environ)
    with UnmockedSession(settings, attach_to=inherited) as session:
        export = ExportedDatabase(session, [*settings.env, *templates])
        try:
            names = ", ".join(sorted(export.variables))
            print(
                f"unmocked run: {session.server.describe()}, database {export.database} in {names}",
                file=sys.stderr,
            )
            if session.server.reason and inherited is None:
                print(f"unmocked run: {session.server.reason}", file=sys.stderr)
            if export.left_out:
                print(f"unmocked run: {export.left_out}", file=sys.stderr)
            # unmocked inside the command (its pytest plugin, a nested export) uses this server
            # too, instead of starting a second one.
            server = server_variables(session.server)
            status = supervise(command, environ_with(os.environ, {**server, **export.variables}))
        finally:
            export.close()
        for note in export.notes:
            print(f"unmocked run: {note}", file=sys.stderr)
    return status


def supervise(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``command`` to its end, forwarding signals; return its exit status, shell-style.

    The signals are blocked and read with sigtimedwait rather than handled, because only its
    siginfo tells a terminal's Ctrl-C (which the command got too) from a ``kill`` aimed at us.
    A command that cannot be started is status 127, as in a shell.
    """
    if not hasattr(signal, "sigtimedwait"):  # macOS: no siginfo, so forward all but Ctrl-C
        return _supervise_with_handlers(command, env)
    watched = {*FORWARDED, signal.SIGCHLD}
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        child = _spawn(command, env, previous_mask)
        if child is None:
            return 127
        while child.poll() is None:
            info = signal.sigtimedwait(watched, 1.0)
            # Ctrl-C in a terminal reaches the whole foreground group, the command too: a second
            # SIGINT from us would cut its own clean-up short. Forward only what was sent to us.
            if info and info.si_signo in FORWARDED and info.si_code != _SI_KERNEL:
                child.send_signal(info.si_signo)
        while signal.sigtimedwait(watched, 0) is not None:
            pass  # drop what arrived while the command ended; the command already answered it
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    return _status(child.returncode)


def _supervise_with_handlers(command: Sequence[str], env: Mapping[str, str]) -> int:
    child = _spawn(command, env, None)
    if child is None:
        return 127

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    previous = {
        signum: signal.signal(signum, signal.SIG_IGN if signum == signal.SIGINT else forward)
        for signum in FORWARDED
    }
    try:
        child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return _status(child.returncode)


def _spawn(
    command: Sequence[str], env: Mapping[str, str], mask: set[int | signal.Signals] | None
) -> subprocess.Popen[bytes] | None:
    try:
        return subprocess.Popen(list(command), env=dict(env), preexec_fn=_child_setup(mask))
    except (FileNotFoundError, PermissionError) as error:
        print(f"unmocked run: cannot run {command[0]!r}: {error.strerror}", file=sys.stderr)
        return None


def _child_setup(mask: set[int | signal.Signals] | None) -> Callable[[], None]:
    """Between fork and exec: the signal mask we had before blocking, and SIGTERM when we die."""
    tie_to_parent = die_with_parent(signal.SIGTERM)

    def setup() -> None:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        tie_to_parent()

    return setup


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode
