"""Durability helpers: start writeback early, and a full fsync.

Starting writeback of each chunk as soon as it is copied (Linux ``sync_file_range`` with
``SYNC_FILE_RANGE_WRITE``, which does not wait) overlaps the disk writes with the copy, so the
final ``fsync`` has little left to do: on the project machine a 1 GB merge's copy + fsync went
from ~0.75 s to ~0.45 s (``cat`` without fsync: ~0.35 s).
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["WRITEBACK_CHUNK", "data_sync", "full_fsync", "start_writeback"]

WRITEBACK_CHUNK = 16 << 20
"""Bytes copied between two writeback kicks."""

_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = None  # resolved on first use: None = not tried, False = unavailable


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``[offset, offset + nbytes)`` to disk; never waits.

    A no-op where ``sync_file_range`` does not exist (macOS) or fails.
    """
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = _load_sync_file_range()
    if _sync_file_range:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)  # errors: best effort


def _load_sync_file_range():
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def data_sync(fd: int) -> None:
    """Make the file's data durable before a resume journal may claim it: ``fdatasync``
    where it exists; on macOS :func:`full_fsync`, since its ``fsync`` leaves the data in the
    drive's cache, where a power cut could lose it after the journal's own write landed."""
    if sys.platform == "darwin":
        full_fsync(fd)
        return
    getattr(os, "fdatasync", os.fsync)(fd)


def full_fsync(fd: int) -> None:
    """fsync; on macOS also ask the drive to flush its cache (``F_FULLFSYNC``)."""
    if sys.platform == "darwin":
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
    os.fsync(fd)
