"""Peak memory and bytes read of this process, and the machine's memory, measured the same
way everywhere.

On Linux ``ru_maxrss`` is inherited across ``fork`` + ``exec`` (a child started by a big parent
reports the parent's peak), so the peak comes from ``VmHWM`` in ``/proc/self/status``, which
starts fresh with each program. Elsewhere ``ru_maxrss`` is used (bytes on macOS, KiB on Linux).
"""

from __future__ import annotations

import functools
import os
import resource
import sys

__all__ = ["io_read_bytes", "peak_rss_bytes", "physical_memory"]


@functools.cache
def physical_memory() -> int:
    """Bytes of RAM in this machine (0 where the OS doesn't say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far, in bytes."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def io_read_bytes() -> int | None:
    """Bytes this process has read through ``read``/``pread`` so far (``rchar`` of
    ``/proc/self/io``; page cache hits included), or ``None`` where that file doesn't exist."""
    try:
        with open("/proc/self/io", "rb") as f:
            for line in f:
                if line.startswith(b"rchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
