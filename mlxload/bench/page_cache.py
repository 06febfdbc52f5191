"""Page-cache state for a benchmark: warm it (read every file once), or drop it where allowed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["COLD_NEEDS", "DROP_CACHES", "can_drop_caches", "drop_caches", "warm"]

DROP_CACHES = Path("/proc/sys/vm/drop_caches")

COLD_NEEDS = (
    "dropping the cache needs root"
    if sys.platform.startswith("linux")
    else "--cold needs Linux's drop_caches; macOS drops the cache only by 'sudo purge'"
)
"""Why a ``--cold`` run was measured warm, in the report's words."""


def warm(files: Iterable[Path], chunk: int = 8 << 20) -> int:
    """Read every file once so the runs that follow find it in the page cache.

    Returns:
        Bytes read.
    """
    total = 0
    buf = bytearray(chunk)
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


def can_drop_caches() -> bool:
    """Whether this process may write ``/proc/sys/vm/drop_caches`` (Linux, as root)."""
    return DROP_CACHES.exists() and os.access(DROP_CACHES, os.W_OK)


def drop_caches() -> None:
    """Flush dirty pages and drop the whole page cache.

    Raises:
        PermissionError: not permitted here (see :func:`can_drop_caches`).
    """
    if not can_drop_caches():
        raise PermissionError(f"can't write {DROP_CACHES}: dropping the page cache needs root")
    os.sync()
    DROP_CACHES.write_text("3\n")
