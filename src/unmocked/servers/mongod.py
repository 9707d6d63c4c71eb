"""A ``mongod`` from the machine's PATH that unmocked starts for one run and stops after it.

The same rules as the PostgreSQL clusters of :mod:`~unmocked.servers.binaries`, by the same code:

1. the data lives in a slot (:func:`~unmocked.servers._slots.claim_slot`) of the ``mongod``
   cluster in the data root, which is RAM (``/dev/shm``) when there is room: concurrent runs take
   different slots, and idle slots are given back as PostgreSQL's are (``unmocked gc`` too);
2. ``mongod`` runs as our child (:func:`~unmocked.servers._process.spawn`), which the kernel
   signals when we die, however we die: never an orphan holding a port and the slot's RAM;
3. it listens on 127.0.0.1, on a free port, and its Unix socket goes in the slot's own folder
   (0700). Unlike the PostgreSQL clusters it asks no password: another account on the machine
   could reach it over TCP while it runs;
4. :meth:`MongodServer.close` stops it (SIGINT is mongod's clean shutdown) and frees the slot.

A slot's data folder outlives the run, like a cluster's: what a killed run left in it is dropped
by the next run's collection (:mod:`unmocked.mongo.databases`), since no live run holds it.
pymongo is imported here only to tell that the server is ready.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import time
from pathlib import Path

from unmocked.errors import MongoError
from unmocked.resources import Closeable
from unmocked.servers import _as_root, _process
from unmocked.servers._places import cache_folder, tail
from unmocked.servers._slots import Slot, claim_slot, collect_idle, data_root
from unmocked.servers.binaries import CLUSTER_FORMAT

_READY_TIMEOUT = 30.0


def cluster_name(program: str) -> str:
    """The cluster's folder in the data root: one per mongod binary (its path and mtime), since a
    data folder an older mongod wrote may not start under a newer one; the format suffix keeps
    collect_idle from taking its slots for those of an older format."""
    real = Path(program).resolve()
    identity = f"{real}:{real.stat().st_mtime_ns}"
    return f"mongod-{hashlib.sha256(identity.encode()).hexdigest()[:8]}-{CLUSTER_FORMAT}"


def mongod_on_path() -> str | None:
    """The ``mongod`` program the PATH names, or None."""
    return shutil.which("mongod")


class MongodServer(Closeable):
    """A mongod we started: our child, on its slot's data, stopped on :meth:`close`."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], slot: Slot, log: Path) -> None:
        self.url = url
        self.process = process
        self.slot = slot
        self.log = log

    def describe(self) -> str:
        return f"mongod (pid {self.process.pid}) on {self.url}, data in {self.slot.folder}"

    def close(self) -> None:
        if not self.slot.released:
            try:
                _process.stop(self.process)
            finally:
                self.slot.release()


def start_mongod(program: str, cache_dir: Path) -> MongodServer:
    """Start ``program`` (a mongod) on a slot of our own; :class:`MongoError` if it will not run."""
    # The data root PostgreSQL's clusters use, by the same account, so that its mode stays theirs
    # (as root, one that PostgreSQL's account may traverse). mongod itself runs as we do: it
    # allows root, and a mongod from an archive under /root could not run as another account.
    root = data_root(cache_folder(cache_dir), _as_root.service_account())
    slot = claim_slot(root / cluster_name(program), None)
    with contextlib.suppress(OSError):  # giving back idle RAM must never fail a run
        collect_idle(root, CLUSTER_FORMAT)
    data, log = slot.data_dir, slot.log
    data.mkdir(mode=0o700, exist_ok=True)
    port = _process.free_port()
    argv = [
        program,
        "--dbpath",
        str(data),
        "--port",
        str(port),
        "--bind_ip",
        "127.0.0.1",
        "--unixSocketPrefix",
        str(slot.folder),
        # Tests hold little data: the default cache (half the RAM) would be taken from the machine.
        "--wiredTigerCacheSizeGB",
        "0.25",
        "--setParameter",
        "diagnosticDataCollectionEnabled=false",
    ]
    try:
        process = _process.spawn(argv, None, cwd=slot.folder, log=log)
    except OSError as error:
        slot.release()
        raise MongoError(f"{program} could not be started: {error}.") from None
    url = f"mongodb://127.0.0.1:{port}/"
    server = MongodServer(url, process, slot, log)
    try:
        _wait_until_ready(server)
    except BaseException:
        server.close()
        raise
    return server


def _wait_until_ready(server: MongodServer) -> None:
    """Return once mongod answers ``ping``; :class:`MongoError`, with its log, if it exits first
    or does not answer within :data:`_READY_TIMEOUT` seconds."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise MongoError(
                f"mongod exited with status {server.process.returncode} as it started, on "
                f"{server.slot.folder}. Its log ends:\n{tail(server.log)}"
            )
        client: MongoClient[dict[str, object]] = MongoClient(
            server.url, serverSelectionTimeoutMS=500, connectTimeoutMS=500
        )
        try:
            client.admin.command("ping")
            return
        except PyMongoError:
            time.sleep(0.05)
        finally:
            client.close()
    raise MongoError(
        f"mongod did not answer within {_READY_TIMEOUT:.0f} s on {server.url}. Its log ends:\n"
        f"{tail(server.log)}"
    )
