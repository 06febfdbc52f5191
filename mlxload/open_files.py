"""Room for one open file per shard.

A checkpoint keeps each shard it has opened open (reads go through one descriptor, checked
against the file's identity), and a merge opens all its sources before writing. With hundreds
of shards that meets the default limit on open files (256 on macOS, 1024 on Linux), so the
soft limit is raised towards the hard one when more are needed; if that is not enough,
:func:`opening_shard` words the error, or :func:`require_open_files` refuses up front.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from mlxload.errors import TooManyOpenFilesError

__all__ = ["ensure_open_files", "opening_shard", "require_open_files", "with_room_to_open"]

T = TypeVar("T")

_MARGIN = 64  # for everything else the process has open
_lock = threading.Lock()
_DARWIN_MAX = 10240  # macOS refuses a soft limit above OPEN_MAX even with an unlimited hard one


def ensure_open_files(count: int) -> None:
    """Raise the soft limit on open files so ``count`` more fit, if the hard limit allows.

    Best effort: where it can't be raised (no ``resource`` module, a low hard limit) nothing
    happens, and an open that fails later is reported by :func:`opening_shard`.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    with _lock:  # read-then-raise: another thread's raise must not be undone
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        now = _open_now()
        if now is None:  # not even a directory listing fits: every descriptor is taken
            now = soft if soft != resource.RLIM_INFINITY else 0
        want = now + count + _MARGIN
        if soft == resource.RLIM_INFINITY or soft >= want:
            return
        cap = _DARWIN_MAX if sys.platform == "darwin" else want
        limit = min(want, cap) if hard == resource.RLIM_INFINITY else min(want, hard)
        if limit > soft:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def require_open_files(count: int, what: str) -> None:
    """:func:`ensure_open_files`, then refuse at once if ``count`` more still don't fit: for
    work that holds them all open together and would otherwise stop part way.

    Args:
        count: Descriptors needed at once.
        what: What must be open at once, for the message (``"this split holds ..."``).

    Raises:
        TooManyOpenFilesError: the hard limit is too low; says to raise ``ulimit -n``.
    """
    ensure_open_files(count)
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    now = _open_now()
    if soft == resource.RLIM_INFINITY or now is None or soft - now >= count:
        return
    need = -(-(now + count + _MARGIN) // 1024) * 1024
    raise TooManyOpenFilesError(
        errno.EMFILE,
        f"{what}: {count} files, but the limit on open files ({soft}, {now} open already) "
        f"leaves room for {max(soft - now, 0)}; raise it (`ulimit -n {need}`) and run again",
    )


def _open_now() -> int | None:
    """Descriptors open in this process now (None where that can't be listed)."""
    for where in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(where))
    return None


def with_room_to_open(action: Callable[[], T], what: str) -> T:
    """``action()`` (which opens ``what``); when the process has no descriptor left
    (``EMFILE``), the soft limit is raised if the hard one allows and it is tried once more.

    Raises:
        TooManyOpenFilesError: still no descriptor; says to raise ``ulimit -n``.
    """
    try:
        return action()
    except OSError as e:
        if e.errno != errno.EMFILE:
            raise
    ensure_open_files(_MARGIN)
    with _emfile_as(
        f"{what}: too many open files in this process; raise the limit (`ulimit -n 4096`) and "
        "run again, or close files no longer used"
    ):
        return action()


@contextlib.contextmanager
def opening_shard(what: str, count: int) -> Iterator[None]:
    """Turn an ``EMFILE`` raised in the block (opening ``what``, one of ``count`` shards) into
    :class:`~mlxload.errors.TooManyOpenFilesError`; other errors pass through unchanged."""
    with _emfile_as(
        f"{what}: too many open files ({count} shards need one each); raise the limit "
        "(`ulimit -n 4096`) and run again"
    ):
        yield


@contextlib.contextmanager
def _emfile_as(message: str) -> Iterator[None]:
    """An ``EMFILE`` raised in the block as :class:`~mlxload.errors.TooManyOpenFilesError`
    saying ``message``; other errors pass through unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno != errno.EMFILE:
            raise
        raise TooManyOpenFilesError(errno.EMFILE, message) from e
