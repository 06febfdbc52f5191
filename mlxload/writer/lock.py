"""One writer per output: an exclusive ``flock`` on ``.<name>.mlxload-lock`` beside it.

Two runs writing the same output would share its temporary file and journal: one could rename
the other's unfinished file into place. The second run therefore fails at once with
:class:`~.errors.OutputBusyError` instead of waiting. The lock file is removed on release; a
run that locked a file someone removed meanwhile notices (inode check) and locks the new one.
Where ``fcntl`` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mlxload.work_names import work_path
from mlxload.writer.errors import OutputBusyError, write_failed

__all__ = ["lock_outputs", "lock_path"]


def lock_path(final: Path) -> Path:
    """The lock file of an output."""
    return work_path(final, "lock")


@contextlib.contextmanager
def lock_outputs(paths: Iterable[Path]) -> Iterator[None]:
    """Hold the lock of every output in ``paths`` for the duration of the block.

    Raises:
        OutputBusyError: another process holds the lock of one of them.
        WriteFailedError: the lock file cannot be created (read-only, no permission...).
    """
    held: list[tuple[Path, int]] = []
    try:
        for final in paths:
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                fd = _lock(lock_path(final), final)
            except OutputBusyError:
                raise
            except OSError as e:  # creating the directory or the lock file
                raise write_failed(e, final) from e
            if fd is not None:
                held.append((lock_path(final), fd))
        yield
    finally:
        _release(held)


def _release(held: list[tuple[Path, int]]) -> None:
    """Remove and unlock every lock file, even if Ctrl-C comes meanwhile (then raised after:
    a lock file left behind would be taken by the next run anyway, but must not be)."""
    interrupted: KeyboardInterrupt | None = None
    for path, fd in reversed(held):
        try:
            with contextlib.suppress(OSError):
                path.unlink()  # while still locked, so nobody can be holding this inode
        except KeyboardInterrupt as e:
            interrupted = e
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    if interrupted is not None:
        raise interrupted


def _lock(path: Path, final: Path) -> int | None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(
                f"{final} is being written by another mlxload process (it holds {path}); "
                "wait for it to finish, then run this again"
            ) from None
        except OSError:
            os.close(fd)  # a filesystem without locks: go on unlocked, as before
            return None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        st = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (st.st_dev, st.st_ino):
            return fd
        os.close(fd)  # the holder removed it as we opened it: lock the file now there
