"""Write every byte to a file descriptor, or fail: ``write``/``pwrite`` may write less.

A write that makes no progress (a full disk can return 0 instead of failing) raises
``OSError(ENOSPC)`` rather than looping for ever.
"""

from __future__ import annotations

import errno
import os

__all__ = ["pwrite_all", "write_all"]


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``.

    Raises:
        OSError: the OS's error, or ``ENOSPC`` when a write wrote nothing.
    """
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, "no byte written (is the disk full?)")
        view, offset = view[n:], offset + n


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` at the descriptor's position (see :func:`pwrite_all`)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, "no byte written (is the disk full?)")
        view = view[n:]
