"""What the plugin's modules share: the session's stash key, unmocked's errors as test failures,
and the server as it travels to xdist workers.

Private to :mod:`unmocked.plugin`; the library never imports it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from _pytest.outcomes import Failed

from unmocked.errors import UnmockedError
from unmocked.servers import Server
from unmocked.session import UnmockedSession

SESSION_KEY = pytest.StashKey[UnmockedSession]()


def failure(error: UnmockedError) -> Failed:
    """unmocked's own errors, reported as one paragraph without a stack of internal frames."""
    return Failed(str(error), pytrace=False)


@contextmanager
def reported_as_failures() -> Iterator[None]:
    """Turn unmocked's errors raised inside the block into :func:`failure`."""
    try:
        yield
    except UnmockedError as error:
        raise failure(error) from None


def server_to_json(server: Server) -> str:
    """The server for another process, which attaches to it: only this one stops it."""
    return json.dumps(dataclasses.replace(server, owned=False).to_fields())


def server_from_json(text: str) -> Server:
    return Server.from_fields(json.loads(text))
