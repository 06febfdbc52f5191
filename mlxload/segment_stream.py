"""A file-like object that lets MLX read chosen byte ranges of a file into its own memory.

``mx.load(stream, format="safetensors")`` parses a header from the stream and, when the arrays
are evaluated, calls ``stream.readinto(view)`` with ``view`` pointing at the array's freshly
allocated MLX buffer. :class:`SegmentStream` serves a small synthetic header that lists the
wanted ranges as ``uint8`` tensors and answers each ``readinto`` with ``os.preadv`` straight
from the real file into that buffer. So every byte is copied exactly once, by the kernel, from
the page cache into MLX-owned memory: no mmap page faults, no intermediate numpy or ``bytes``
object, no SIGBUS if the file shrinks (a short read is an error instead), and the reads of
large ranges are split across threads (``preadv`` releases the GIL).
"""

from __future__ import annotations

import bisect
import ctypes
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson

__all__ = ["MAX_DIM", "MAX_READ", "SegmentStream", "read_range", "read_workers", "u8_shape"]

WritableBuffer = Any  # what MLX's loader reads into: a memoryview, bytearray or numpy array

_PARALLEL_MIN = 8 << 20
"""Ranges at least this large are read by several threads."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_exit_hook = False

EXIT_GRACE_S = 0.01
"""How long the exit hook lets MLX's I/O threads take the GIL (see :func:`_let_mlx_finish`)."""


def _let_mlx_finish() -> None:
    """At exit, release the GIL briefly so MLX's I/O threads can finish with our streams.

    MLX's I/O thread drops its reference to a Python stream's reader after the read, and the
    reader's destructor takes the GIL. If that thread is still waiting for the GIL when the
    interpreter finalizes, CPython ends the thread mid-destructor and the process aborts
    ("terminate called without an active exception", exit 134) in a fraction of runs of any
    script that exits right after a load (measured here: 8 of 40 before this hook, 0 after;
    plain ``mx.load`` of a Python stream does the same). atexit runs while other threads may
    still take the GIL, so a short sleep here is enough.
    """
    import time

    time.sleep(EXIT_GRACE_S)


def _register_exit_hook() -> None:
    global _exit_hook
    with _pool_lock:
        if not _exit_hook:
            import atexit

            atexit.register(_let_mlx_finish)
            _exit_hook = True


def read_workers() -> int:
    """Threads used for large reads: ``MLXLOAD_READ_THREADS``, else 4 to 8 by CPU count.

    More threads than cores still helps: much of a first read is page-fault handling of the
    freshly allocated destination, which overlaps across threads.
    """
    env = os.environ.get("MLXLOAD_READ_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(4, min(8, os.cpu_count() or 1))


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(read_workers(), thread_name_prefix="mlxload-read")
        return _pool


MAX_DIM = 2**31 - 1
"""Largest dimension of an MLX array."""


def u8_shape(nbytes: int, row_bytes: int | None = None) -> list[int]:
    """The shape a range of ``nbytes`` bytes is described with: ``[nbytes]``, or, past MLX's
    32-bit dimension limit (a 2.1 GB embedding table), ``[nbytes // d, d]`` with ``d`` the
    tensor's ``row_bytes`` when given and fitting, else the largest power of two up to 1 MiB
    that divides it; either way viewing it as the tensor's dtype and reshaping needs no copy.

    Raises:
        UnsupportedShapeError: no such ``d`` (a size past the limit that is neither made of
            fitting rows nor a multiple of 16).
    """
    if nbytes <= MAX_DIM:
        return [nbytes]
    rows = nbytes // row_bytes if row_bytes and nbytes % row_bytes == 0 else 0
    if row_bytes and row_bytes <= MAX_DIM and 0 < rows <= MAX_DIM:
        return [rows, row_bytes]
    d = 1 << 20
    while d > 1 and (nbytes % d or nbytes // d > MAX_DIM):
        d >>= 1
    if nbytes % d or nbytes // d > MAX_DIM or d < 16:
        from mlxload.errors import UnsupportedShapeError

        raise UnsupportedShapeError(
            f"a range of {nbytes} bytes can't be described to MLX (32-bit dimensions)"
        )
    return [nbytes // d, d]


MAX_READ = 1 << 30
"""Bytes asked of one ``preadv`` call: macOS refuses (EINVAL) a read of more than 2**31 - 1
bytes, which Python guards against for ``os.read`` but not for ``os.preadv``."""


def _pread_exact(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset``; returns the bytes read (short only at end of file)."""
    done = 0
    n = len(view)
    while done < n:
        got = os.preadv(fd, [view[done : done + MAX_READ]], offset + done)
        if got == 0:
            break
        done += got
    return done


def read_range(
    fd: int, offset: int, nbytes: int, *, evict: bool = False, into: np.ndarray | None = None
) -> np.ndarray:
    """``nbytes`` bytes of the file from ``offset`` (``uint8``, writable): fewer only where the
    file ends first.

    The small-read counterpart of :class:`SegmentStream` (same read primitive, same eviction).

    Args:
        into: A ``uint8`` buffer of at least ``nbytes`` to read into (and return the start
            of), else a new one. Either way it is not zero-filled first.
    """
    buffer = np.empty(nbytes, np.uint8) if into is None else into[:nbytes]
    got = _pread_exact(fd, memoryview(buffer), offset)
    if evict and got and hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, got, os.POSIX_FADV_DONTNEED)
    return buffer[:got]


class SegmentStream:
    """Synthetic safetensors stream: a header naming ``segments``, data read from ``fd``.

    Args:
        fd: An open file descriptor of the real file (not closed by this object).
        segments: ``(name, file_offset, nbytes)`` for each range to expose, as a ``uint8``
            tensor called ``name``; or ``(name, [(file_offset, nbytes), ...])`` to gather
            several ranges into one tensor (e.g. a block of columns: one range per row).
        row_bytes: Per name, the byte length of one row of the tensor it holds, so a range
            past 2**31 bytes can be described to MLX by rows (see :func:`u8_shape`).
        evict: After copying a range, tell the kernel its page-cache pages are no longer
            needed (``POSIX_FADV_DONTNEED``), so a one-copy load doesn't also leave a second
            full copy of the model in the page cache (Linux: elsewhere there is no such call).

    Attributes:
        short_read: Set when the file ended before a requested range did.
    """

    closed = False

    def __init__(
        self,
        fd: int,
        segments: Sequence[tuple],
        *,
        evict: bool = False,
        row_bytes: Mapping[str, int] | None = None,
    ) -> None:
        _register_exit_hook()
        self._fd = fd
        self._evict = evict and hasattr(os, "posix_fadvise")
        entries = {}
        starts: list[int] = []
        file_offsets: list[int] = []
        pos = 0
        for name, *where in segments:
            pieces = where[0] if len(where) == 1 else [tuple(where)]
            first = pos
            for file_offset, nbytes in pieces:
                if nbytes:
                    starts.append(pos)
                    file_offsets.append(file_offset)
                    pos += nbytes
            entries[name] = {
                "dtype": "U8",
                "shape": u8_shape(pos - first, (row_bytes or {}).get(name)),
                "data_offsets": [first, pos],
            }
        header = orjson.dumps(entries)
        self._prefix = struct.pack("<Q", len(header)) + header
        self._data_size = pos
        self._starts = starts
        self._file_offsets = file_offsets
        self._pos = 0
        self.short_read = False

    @property
    def file_ranges(self) -> list[tuple[int, int]]:
        """``(file offset, nbytes)`` of every piece of the file this stream reads."""
        ends = [*self._starts[1:], self._data_size][: len(self._starts)]  # (none: no pieces)
        return [(f, e - s) for f, s, e in zip(self._file_offsets, self._starts, ends, strict=True)]

    # The three methods MLX's reader calls. MLX holds the GIL around seek + readinto, and
    # readinto copies self._pos before any GIL release, so concurrent MLX I/O threads are safe.
    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = len(self._prefix) + self._data_size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: WritableBuffer) -> int:
        """Fill ``buffer`` from the current position; return the bytes read (fewer at a short
        read, which sets :attr:`short_read`)."""
        view = memoryview(buffer).cast("B")
        pos = self._pos
        n = len(view)
        if n and ctypes.addressof(ctypes.c_char.from_buffer(view)) == 0:  # (numpy hides NULL)
            # MLX's allocation failed and it asks for a read into no memory at all: a read
            # there would write wherever the offsets land.
            raise MemoryError(f"MLX gave no memory to read {n} bytes into (out of memory?)")
        done = 0
        prefix = self._prefix
        if pos < len(prefix):
            done = min(n, len(prefix) - pos)
            view[:done] = prefix[pos : pos + done]
        i = -1
        while done < n:
            data_pos = pos + done - len(prefix)
            if i < 0 or data_pos != self._starts[i]:  # pieces are visited in order: no search
                i = bisect.bisect_right(self._starts, data_pos) - 1
            seg_end = self._starts[i + 1] if i + 1 < len(self._starts) else self._data_size
            take = min(n - done, seg_end - data_pos)
            file_offset = self._file_offsets[i] + (data_pos - self._starts[i])
            got = self._read(view[done : done + take], file_offset)
            if self._evict and got:
                os.posix_fadvise(self._fd, file_offset, got, os.POSIX_FADV_DONTNEED)
            done += got
            if got < take:
                self.short_read = True
                break
            i += 1
        self._pos = pos + done
        return done

    def _read(self, view: memoryview, file_offset: int) -> int:
        n = len(view)
        if n < _PARALLEL_MIN:
            return _pread_exact(self._fd, view, file_offset)
        pool = _get_pool()
        parts = max(2, min(read_workers(), n // (_PARALLEL_MIN // 2)))
        step = -(-n // parts)
        futures = [
            pool.submit(_pread_exact, self._fd, view[a : a + step], file_offset + a)
            for a in range(0, n, step)
        ]
        got = [f.result() for f in futures]
        # A short piece means the file ended early; report only the contiguous prefix.
        total = 0
        for a, g in zip(range(0, n, step), got, strict=True):
            total += g
            if g < min(step, n - a):
                break
        return total
