"""Child processes that never outlive us: the one "die with the parent" set-up unmocked uses.

A server or a command left running after its test run is a leak no clean-up hook can reach, since
a SIGKILLed parent runs none. So every long-lived child unmocked starts asks the kernel, between
fork and exec, to signal it when we die:

1. :func:`die_with_parent` is called in the parent, before the fork: it reads our pid and looks up
   ``prctl`` (neither is safe to do in the child of a multi-threaded parent);
2. the function it returns runs in the child (as part of a ``preexec_fn``, after any change of
   account: the kernel clears the request when credentials change) and sets PR_SET_PDEATHSIG;
3. if we died between the fork and that call, the child exits at once instead.

The kernel sends the signal when the *thread* that forked exits, not the process: start children
from a thread that lives as long as they should (the main thread). Outside Linux there is no such
request (macOS); the child then relies on our clean-up alone.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(signum: int) -> Callable[[], None]:
    """A function for the child, between fork and exec: be sent ``signum`` when we die."""
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None

    def tie_to_parent() -> None:
        if prctl is None:
            return
        prctl(_PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:  # we died before prctl took effect
            os._exit(1)

    return tie_to_parent
