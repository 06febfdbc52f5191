"""Copy a byte range between two open files without passing it through a large buffer.

Tries ``os.copy_file_range`` (in-kernel, may reflink), then ``os.sendfile``, then a fixed
8 MiB buffer (``os.preadv``/``os.pwrite``). The first method the OS refuses for a pair of
files is not tried again for the rest of the process.
"""

from __future__ import annotations

import errno
import os

from mlxload.errors import FileChangedError
from mlxload.fd_write import pwrite_all

__all__ = ["BUFFER_SIZE", "METHODS", "copy_range"]

BUFFER_SIZE = 8 << 20
"""Size of the only buffer the fallback path allocates (bytes)."""

METHODS = ("copy_file_range", "sendfile", "buffer")

# errno values meaning "this method does not work for these files", as opposed to real I/O
# errors (ENOSPC, EFBIG, EIO), which must propagate.
_UNSUPPORTED = {
    errno.EXDEV,
    errno.EINVAL,
    errno.ENOSYS,
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.EBADF,
    errno.ENOTSOCK,
    errno.ESPIPE,
}
_disabled: set[str] = set()
_CHUNK = 1 << 30  # per syscall; keeps counts well inside ssize_t and makes progress visible


def copy_range(
    src_fd: int, dst_fd: int, src_offset: int, dst_offset: int, count: int, method: str = ""
) -> str:
    """Copy ``count`` bytes from ``src_fd`` at ``src_offset`` to ``dst_fd`` at ``dst_offset``.

    Args:
        src_fd, dst_fd: Open file descriptors (``dst_fd`` writable; its position may change).
        src_offset, dst_offset: Absolute offsets.
        count: Bytes to copy.
        method: Force one of :data:`METHODS` (tests); empty picks the best that works.

    Returns:
        The method that did the copy.

    Raises:
        FileChangedError: the source ended before ``count`` bytes (truncated meanwhile).
        OSError: a real I/O error (ENOSPC, EFBIG, EIO...).
    """
    methods = (method,) if method else [m for m in METHODS if m not in _disabled]
    for name in methods:
        try:
            _COPIERS[name](src_fd, dst_fd, src_offset, dst_offset, count)
            return name
        except _Unsupported:
            _disabled.add(name)
    raise AssertionError("the buffer method never reports unsupported")  # pragma: no cover


class _Unsupported(Exception):
    pass


def _short(src_fd: int, offset: int) -> FileChangedError:
    return FileChangedError(f"source ended at byte {offset}, before the bytes to copy did")


def _copy_file_range(src_fd: int, dst_fd: int, src_off: int, dst_off: int, count: int) -> None:
    fn = getattr(os, "copy_file_range", None)
    if fn is None:
        raise _Unsupported
    _in_kernel(lambda done, n: fn(src_fd, dst_fd, n, src_off + done, dst_off + done),
               src_fd, src_off, count)  # fmt: skip


def _sendfile(src_fd: int, dst_fd: int, src_off: int, dst_off: int, count: int) -> None:
    fn = getattr(os, "sendfile", None)
    if fn is None:
        raise _Unsupported
    os.lseek(dst_fd, dst_off, os.SEEK_SET)  # sendfile writes at the output's position
    _in_kernel(lambda done, n: fn(dst_fd, src_fd, src_off + done, n), src_fd, src_off, count)


def _in_kernel(step, src_fd: int, src_off: int, count: int) -> None:
    """Call ``step(done, n)`` (an in-kernel copy of up to ``n`` bytes at ``done``) until
    ``count`` bytes are copied; a method the OS refuses outright is ``_Unsupported``."""
    done = 0
    while done < count:
        try:
            n = step(done, min(count - done, _CHUNK))
        except OSError as e:
            if done == 0 and e.errno in _UNSUPPORTED:
                raise _Unsupported from None
            raise
        if n == 0:
            raise _short(src_fd, src_off + done)
        done += n


def _buffer(src_fd: int, dst_fd: int, src_off: int, dst_off: int, count: int) -> None:
    buf = bytearray(min(BUFFER_SIZE, max(count, 1)))
    view = memoryview(buf)
    done = 0
    while done < count:
        want = min(count - done, len(buf))
        n = _read_into(src_fd, view[:want], src_off + done)
        if n == 0:
            raise _short(src_fd, src_off + done)
        pwrite_all(dst_fd, view[:n], dst_off + done)
        done += n


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)  # platforms without preadv (older macOS)
    view[: len(data)] = data
    return len(data)


_COPIERS = {"copy_file_range": _copy_file_range, "sendfile": _sendfile, "buffer": _buffer}
