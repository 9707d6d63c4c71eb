"""A throwaway unmocked cache folder, and the cluster data unmocked keeps for it elsewhere.

A cold start needs an empty cache: a new ``UNMOCKED_CACHE_DIR``. unmocked keeps the clusters that
belong to a cache folder in RAM (``/dev/shm/unmocked-<uid>/<digest of the folder's path>``), or in
``/var/tmp`` when RAM is short, so deleting the folder alone would leave them behind until
unmocked's own sweep finds them: both go when the context ends.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_DATA_BASES = (Path("/dev/shm"), Path("/var/tmp"))


@contextmanager
def scratch_cache(prefix: str = "unmocked-bench-cache-") -> Iterator[Path]:
    """Yield a new, empty cache folder; delete it and its cluster data afterwards.

    Servers started with it must have stopped by then (pytest runs stop theirs when they end).
    """
    cache = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    try:
        yield cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        for folder in data_folders(cache):
            shutil.rmtree(folder, ignore_errors=True)


def data_folders(cache: Path) -> list[Path]:
    """Where unmocked may have put the cluster data of ``cache`` (the digest is unmocked's key)."""
    key = hashlib.sha256(str(cache.resolve()).encode()).hexdigest()[:8]
    return [base / f"unmocked-{os.getuid()}" / key for base in _DATA_BASES]
