"""How unmocked's own sessions name themselves on a server, and reading those names back.

Every session unmocked opens (admin, reset, template build) connects with the ``application_name``
``unmocked <run> <pid> <user>@<host>``: the admin session's, which holds the lease, carries the run
id it proves alive, the others ``-``. On a server many machines share, that is what tells whose
connections are whose: ``pg_stat_activity`` shows neither the client's host name nor its pid
(every CI job may come from one NAT address, or from loopback through a tunnel).
``unmocked status`` lists runs by it, and a run that finds no connection left names the holders
by it (:mod:`unmocked.connection_budget`). PostgreSQL keeps 63 bytes of it: a long host name is cut
short, never the run or the pid.
"""

from __future__ import annotations

import functools
import getpass
import os
import socket
from dataclasses import dataclass

OWN_APPLICATION_NAME = "unmocked"
"""The first word of every own session's application_name (the whole of it before 0.2)."""

IS_OWN_SESSION = (
    f"(application_name = '{OWN_APPLICATION_NAME}' "
    f"OR left(application_name, {len(OWN_APPLICATION_NAME) + 1}) = '{OWN_APPLICATION_NAME} ')"
)
"""SQL over ``pg_stat_activity``: true for a session of unmocked's own, of any run (no ``%``
in it, so that it goes into a query with parameters as it is)."""

# PostgreSQL's NAMEDATALEN - 1: the server truncates a longer application_name.
_LONGEST = 63


@dataclass(frozen=True)
class SessionName:
    """What an own session's application_name says of the process that opened it."""

    run: str | None
    """The run id whose lease the session holds; None for the process's other sessions."""
    pid: int
    user: str
    host: str

    def __str__(self) -> str:
        text = f"{OWN_APPLICATION_NAME} {self.run or '-'} {self.pid} {self.user}@{self.host}"
        return text[:_LONGEST]

    @classmethod
    def parse(cls, application_name: str | None) -> SessionName | None:
        """The name back from ``application_name``; None for a session not of ours (or of an
        unmocked that named its sessions just ``unmocked``)."""
        words = (application_name or "").split(" ")
        if len(words) != 4 or words[0] != OWN_APPLICATION_NAME or not words[2].isdigit():
            return None
        user, _, host = words[3].partition("@")
        return cls(None if words[1] == "-" else words[1], int(words[2]), user, host)

    def process(self) -> str:
        """``pid 123 on host (user)``: the process in words."""
        return f"pid {self.pid} on {self.host} ({self.user})"


def own_application_name(run: str | None = None) -> str:
    """The application_name of a session this process opens for its own work (``run``: the
    run whose lease it holds)."""
    pid, user, host = _process()
    return str(SessionName(run, pid, user, host))


@functools.cache
def _identity(pid: int) -> tuple[int, str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a container's arbitrary user)
        user = str(os.getuid())
    host = socket.gethostname().split(".")[0] or "localhost"
    return pid, user.replace(" ", "_") or "?", host.replace(" ", "_")


def _process() -> tuple[int, str, str]:
    """This process's pid, OS user and short host name (a forked child asks anew)."""
    return _identity(os.getpid())
