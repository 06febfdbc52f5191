"""Which file a path is, and whether it is still the file that was read.

:func:`open_regular` opens only regular files (without blocking on a FIFO);
:func:`file_identity` and :func:`identity_change` tell two versions of a file apart, so that a
file replaced or rewritten after it was opened is an error rather than wrong numbers.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from mlxload.errors import CheckpointNotFoundError, FilePermissionError, NotARegularFileError
from mlxload.open_files import with_room_to_open

__all__ = ["file_identity", "identity_change", "open_regular"]


def open_regular(path: Path) -> int:
    """Open a file read-only, refusing anything but a regular file (without blocking on a FIFO).

    Raises:
        NotARegularFileError: a directory, FIFO, device or socket.
        CheckpointNotFoundError: no such file (a ``FileNotFoundError`` too).
        TooManyOpenFilesError: the process has no file descriptor left.
        FilePermissionError: the OS refused to open it (a ``PermissionError`` too).
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = with_room_to_open(lambda: os.open(path, flags), str(path))
    except IsADirectoryError:
        raise NotARegularFileError(f"{path}: is a directory, not a safetensors file") from None
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: no such file or directory", path) from None
    except PermissionError as e:
        raise FilePermissionError(
            e.errno,
            f"{path}: permission denied; check the permissions of the file and its directories",
            str(path),
        ) from None
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise NotARegularFileError(f"{path}: is a loop of symbolic links") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise NotARegularFileError(f"{path}: is {kind}; a safetensors file is expected")
    return fd


def file_identity(st: os.stat_result) -> tuple[int, ...]:
    """What tells two versions of a file apart (see :func:`identity_change`): device, inode,
    size, modification time, status-change time, link count and mode."""
    return (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_nlink,
        st.st_mode,
    )


def identity_change(
    before: tuple[int, ...], now: tuple[int, ...], *, status: bool = True
) -> str | None:
    """How a file's content may have changed between two :func:`file_identity` values, in a
    few words; None when it can't have.

    A rewrite in place that puts the old modification time back (``rsync --inplace -t``,
    ``cp -p``) changes the status-change time only, which no user can set. So do ``chmod`` and
    a new hard link (a backup's ``cp -al``): a status change that comes with a new mode or link
    count is taken for one of those, and not for a change of content. With ``status=False``
    the status-change time is not looked at (so neither is a ``chown`` or a new extended
    attribute, which change nothing else either): for checks where a false alarm costs more.
    """
    if before[:2] != now[:2]:
        return "replaced"
    if before[2] != now[2]:
        return f"modified (size {before[2]} -> {now[2]})"
    if before[3] != now[3]:
        return "modified (written again, same size)"
    if status and before[4] != now[4] and before[5:] == now[5:]:
        return "modified (written again with its time put back, or its times set)"
    return None
