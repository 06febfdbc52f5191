"""One open safetensors file: its validated header, a descriptor, and tensor reads.

:class:`TensorFile` turns byte ranges of the file into ``mx.array``s by one of two paths:

* **zero-copy** (Metal, unified memory): the file is mapped once; a page-aligned window of the
  mapping is imported with ``mx.from_dlpack(..., copy=False)`` and each tensor is a
  slice/view/reshape inside it. Tensors whose absolute offset is not a multiple of their element
  size can't be viewed in place and take the copy path.
* **copy** (every other backend, and the misaligned tensors above): MLX allocates the array and
  :class:`~mlxload.segment_stream.SegmentStream` ``pread``s the bytes straight into it.

Which path each tensor took is recorded in :attr:`TensorFile.paths`.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import mmap
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlxload.backend import backend
from mlxload.byte_ranges import ByteRanges
from mlxload.dtypes import DTYPES, host_stream
from mlxload.errors import (
    FileChangedError,
    FileClosedError,
    InvalidArgumentError,
    MemoryLimitError,
    MlxloadError,
    RangeNotFetchedError,
    TensorNotFoundError,
    UnsupportedIndexError,
    UnsupportedShapeError,
)
from mlxload.file_identity import file_identity, identity_change, open_regular
from mlxload.free_space import human_bytes
from mlxload.header import FileHeader, TensorInfo, read_header_fd
from mlxload.host_copy import arrays_from_buffers, needs_evaluation
from mlxload.process_stats import physical_memory
from mlxload.segment_stream import MAX_DIM, SegmentStream, read_range

__all__ = ["COPY", "ZERO_COPY", "TensorFile", "check_zero_copy", "zero_copy_supported"]

COPY = "copy"
ZERO_COPY = "zero-copy"

_PAGE = 16384  # Apple silicon page size; also a multiple of 4 KiB pages elsewhere
_GROUP_BYTES = 256 << 20
# Which tensors TensorFile._copy_small copies: see _split_by_size.
_SMALL_READ_BYTES = 1 << 20
_SHARED_VIEW_ALIGN = 16
"""On a GPU a tensor shares a read buffer only at a multiple of 16 bytes from its start:
MLX's CUDA matmul (cuBLASLt) refused a float16 view 2 bytes in (CUBLAS_STATUS_NOT_SUPPORTED).
(The CPU takes any element-aligned view, and many tiny tensors read as one range there.)"""
_SMALL_READ_COUNT = 16
_SMALL_TENSOR_BYTES = 16 << 10
_HOST_MAX_NDIM = 32
"""The most dimensions of a tensor copied through numpy: numpy 1.x's limit (2.x: 64); a tensor
with more is streamed, as ``mx.load`` takes more."""


def zero_copy_supported() -> bool:
    """Whether this MLX backend can wrap mapped file pages as arrays (Metal only)."""
    try:
        return bool(mx.metal.is_available())
    except Exception:  # pragma: no cover - very old or unusual MLX builds
        return False


def check_zero_copy(value: object) -> None:
    """Refuse a ``zero_copy`` argument other than ``"auto"``, True or False.

    Raises:
        InvalidArgumentError: anything else; a truthy typo such as ``"false"`` would ask for
            mapping.
    """
    if not ((isinstance(value, str) and value == "auto") or isinstance(value, (bool, np.bool_))):
        raise InvalidArgumentError(f"zero_copy must be 'auto', True or False, got {value!r}")


def _import_no_copy(window: np.ndarray) -> mx.array | None:
    """Wrap host memory as an MLX array without copying, or None where MLX refuses."""
    try:
        return mx.from_dlpack(window, copy=False)
    except (ValueError, RuntimeError, TypeError):
        return None


def _storage_shape(info: TensorInfo) -> tuple[tuple[int, ...], mx.Dtype]:
    """Shape and MLX dtype a tensor is handed back as.

    Dtypes MLX lacks come back as ``uint8``: 8-bit formats keep their shape; sub-byte formats
    pack the fewest trailing axes that end on a whole byte (``F4`` of shape (n, 64) -> (n, 32)
    bytes; (n, 4, 1) -> (n, 2); (6,) -> (3,)).
    """
    spec = DTYPES[info.dtype]
    if spec.mlx is not None:
        return info.shape, spec.mlx
    if spec.bits == 8:
        return info.shape, mx.uint8
    for k in range(len(info.shape) - 1, 0, -1):
        tail_bits = math.prod(info.shape[k:]) * spec.bits
        if tail_bits % 8 == 0:
            return (*info.shape[:k], tail_bits // 8), mx.uint8
    return (info.nbytes,), mx.uint8


def _check_mlx_shape(path: Path, info: TensorInfo) -> None:
    """Refuse, before reading, a tensor MLX can't represent (a dimension over 32 bits)."""
    dims = info.shape
    if DTYPES[info.dtype].bits < 8:  # packed: the byte axis may be longer than any dim
        dims = (*dims, *_storage_shape(info)[0])
    if dims and max(dims) > MAX_DIM:
        raise UnsupportedShapeError(
            f"{path}: tensor {info.name!r} has shape {info.shape}; MLX array dimensions are "
            f"32-bit (at most {MAX_DIM}), so it can't be loaded as an mx.array"
        )


_EVICT_RANGES = 64
"""Reads of more ranges than this (a block of columns: one per row) skip the reach: advising
each again cost 2.5-3.7x the read."""
_EVICT_REACH = 4 << 20
"""How far into bytes copied before an eviction reaches (see :meth:`TensorFile._evict_copied`)."""


class TensorFile:
    """A safetensors file opened for reading.

    Args:
        path: The file.
        zero_copy: ``"auto"`` (map on Metal, copy elsewhere), ``True`` to insist on trying the
            mapping, or ``False`` to always copy.
        evict_page_cache: Drop each copied range from the page cache (see
            :class:`~mlxload.segment_stream.SegmentStream`). Off by default: a warm cache makes
            the next load fast.
        header: This file's header, already read and validated (``read_header``): used as
            is if the file opened is still the one it came from, else read again.
        readable: For a file fetched range by range (holes elsewhere): the ranges that hold
            real bytes. A read outside them raises :class:`RangeNotFetchedError` instead of
            returning zeros; the file is always copied, never mapped.

    Raises:
        SafetensorsError: the header is invalid.
        InvalidArgumentError: ``zero_copy`` is not ``"auto"``, True or False.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        zero_copy: bool | str = "auto",
        evict_page_cache: bool = False,
        header: FileHeader | None = None,
        readable: ByteRanges | None = None,
    ) -> None:
        check_zero_copy(zero_copy)
        # Absolute: identity checks stat the path again later, maybe after an os.chdir.
        self.path = Path(path).absolute()
        self._evict = evict_page_cache and hasattr(os, "posix_fadvise")
        self._copied = ByteRanges()  # what was copied, for evict_page_cache
        # One descriptor for header and data, identity taken from it: a path replaced while
        # we open it can't pair one file's header with another file's bytes.
        self._fd = open_regular(self.path)
        try:
            if (
                header is None
                or header.identity is None
                or identity_change(header.identity, file_identity(os.fstat(self._fd)))
            ):
                header = read_header_fd(self._fd, self.path)
            self.header: FileHeader = header
            self._identity = self.header.identity
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self._zero_copy = zero_copy_supported() if zero_copy == "auto" else bool(zero_copy)
        # A partly fetched file: every read is checked against what is there, and none may
        # view the file in place (a view would read whatever the holes hold).
        self._readable = readable
        if readable is not None:
            self._zero_copy = False
        self._mmap: mmap.mmap | None = None
        self._lock = threading.Condition()  # guards _fd, _mmap and _readers
        self._readers = 0
        self.paths: dict[str, str] = {}
        """Tensor name -> ``"zero-copy"`` or ``"copy"``, for each tensor read so far."""

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the descriptor, once reads in progress in other threads have finished.

        Arrays already returned stay valid (copies own their memory, zero-copy arrays keep the
        mapping alive through their own references).
        """
        with self._lock:
            self._lock.wait_for(lambda: self._readers == 0)
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._mmap = None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Keep the descriptor open for the duration of a read (``close`` waits for it)."""
        with self._lock:
            if self._fd < 0:
                raise FileClosedError(f"{self.path}: file is closed")
            self._readers += 1
        try:
            yield
        finally:
            with self._lock:
                self._readers -= 1
                self._lock.notify_all()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if self._fd >= 0:
                os.close(self._fd)
        except Exception:
            pass

    # -- info ------------------------------------------------------------------------------
    @property
    def tensors(self) -> Mapping[str, TensorInfo]:
        """Name -> :class:`TensorInfo` of every tensor in the file, from its header."""
        return self.header.tensors

    def info(self, name: str) -> TensorInfo:
        """The :class:`TensorInfo` of tensor ``name`` (a :class:`TensorNotFoundError` if none)."""
        try:
            return self.header.tensors[name]
        except KeyError:
            raise TensorNotFoundError.among(
                f"{self.path}: no tensor named {name!r}", name, self.header.tensors
            ) from None

    def check_unchanged(self) -> None:
        """Raise :class:`FileChangedError` if the file was truncated, modified or replaced.

        Called before any tensor byte is touched, so a changed file is an error instead of
        wrong numbers (or SIGBUS on a shrunken mapping).
        """
        if self._fd < 0:
            raise FileClosedError(f"{self.path}: file is closed")
        now = file_identity(os.fstat(self._fd))
        try:
            on_disk = os.stat(self.path)
            replaced = (on_disk.st_dev, on_disk.st_ino) != now[:2]
        except OSError:  # gone, or its directory moved, unreadable, a loop of links now
            replaced = True
        change = "replaced" if replaced else identity_change(self._identity, now)
        if change is not None:
            raise FileChangedError(
                f"{self.path}: file was {change} after it was opened; its tensors can't be "
                "trusted — open it again"
            )
        self._identity = now  # (a chmod or new link: the content is still the one opened)

    # -- reads -----------------------------------------------------------------------------
    def read(self, names: Iterable[str]) -> dict[str, mx.array]:
        """Materialize tensors (evaluated) by name.

        Raises:
            TensorNotFoundError: unknown name.
            FileChangedError: the file changed since it was opened.
        """
        infos = [self.info(n) for n in names]
        for info in infos:
            _check_mlx_shape(self.path, info)
        with self._reading():
            self.check_unchanged()
            out: dict[str, mx.array] = {}
            to_copy: list[TensorInfo] = []
            if self._zero_copy:
                for info in infos:
                    arr = self._view_in_place(info)
                    if arr is None:
                        to_copy.append(info)
                    else:
                        out[info.name] = arr
                        self.paths[info.name] = ZERO_COPY
            else:
                to_copy = infos
            self._check_allocatable([(i.name, i.nbytes) for i in to_copy])
            lazy = list(out.values())
            small, large = _split_by_size(to_copy)
            if small:
                out.update(self._copy_small(small))  # evaluated already: see there
            if large:
                copied = self._copy_tensors(large)
                out.update(copied)
                lazy += copied.values()
            if lazy:
                mx.eval(lazy)
        return {n: out[n] for n in (i.name for i in infos)}

    def _copy_small(self, infos: list[TensorInfo]) -> dict[str, mx.array]:
        """Copy path for small tensors: ``pread``, then ``mx.array``.

        The stream path costs a fixed 110-240 us a read (``mx.load`` of the stream, and two
        MLX evaluations, each a round trip to MLX's stream thread of 8-80 us here) and about
        7 us a tensor (evaluating its view), so ``ckpt[name]`` over 5,000 small tensors took
        1.3 s, and reading them all at once 1.8x ``mx.load``'s time. This path needs no
        evaluation (see :mod:`~mlxload.host_copy`): each run of adjacent tensors is read into
        a scratch buffer, and ``mx.array`` copies each tensor into MLX memory at once. That is
        a second copy, so it is taken only where it is still the faster one: see
        :func:`_split_by_size`.

        Returns:
            name -> evaluated array.
        """
        runs = _adjacent_runs(infos, _SMALL_READ_BYTES)
        extents = [_extent(run) for run in runs]
        if self._readable is not None:
            self._check_readable([(str(k), *extent) for k, extent in enumerate(extents)])
        # mx.array copies at once, so one scratch buffer serves every run (new memory for
        # each would be page-faulted in each time).
        scratch = np.empty(max(size for _, size in extents), np.uint8) if len(runs) > 1 else None
        out: dict[str, mx.array] = {}
        for run, (start, size) in zip(runs, extents, strict=True):
            try:
                data = read_range(self._fd, start, size, evict=self._evict, into=scratch)
            except OSError as e:
                self.check_unchanged()
                raise MlxloadError(f"{self.path}: reading tensor data failed: {e}") from e
            if len(data) < size:
                self.check_unchanged()
                raise self._ended_early()
            parts = []
            for info in run:
                shape, dtype = _storage_shape(info)
                at = info.offset - start
                parts.append((data[at : at + info.nbytes], dtype, shape))
                self.paths[info.name] = COPY
            out.update(zip((i.name for i in run), arrays_from_buffers(parts), strict=True))
        self.check_unchanged()  # as in _copy_ranges: a same-size rewrite during the read
        self._evict_copied(extents)
        return out

    def _ended_early(self) -> FileChangedError:
        return FileChangedError(
            f"{self.path}: file ended before the tensor data did; it was truncated after it "
            "was opened"
        )

    def _copy_tensors(self, infos: list[TensorInfo]) -> dict[str, mx.array]:
        """Copy path for many tensors: one read per run of adjacent tensors.

        Tensors that sit next to each other in the file (each at a distance from the run's start
        that is a multiple of its element size) are read as one range of up to 256 MiB into one
        MLX buffer and handed out as views of it, which saves a Python round trip and an
        allocation per tensor: on a 2 GB file of 8 MiB tensors, 0.55 s instead of 0.62-0.64 s
        with a buffer per tensor or per 16-32 MiB (best of 7 fresh processes each). They then
        share that allocation: it is freed when the last of them is.
        """
        align = 1 if backend() == "cpu" else _SHARED_VIEW_ALIGN
        groups = _adjacent_runs(infos, _group_bytes(), align)
        raw = self._copy_ranges(
            [(f"{k}", g[0].offset, g[-1].end - g[0].begin) for k, g in enumerate(groups)],
            {f"{k}": _row_bytes(g[0]) for k, g in enumerate(groups) if len(g) == 1},
        )
        out: dict[str, mx.array] = {}
        for k, group in enumerate(groups):
            blob = raw[f"{k}"]
            if len(group) > 1 and blob.ndim > 1:
                blob = blob.reshape(-1)  # groups stay under 2**31 bytes: see _group_bytes
            base = group[0].begin
            for info in group:
                part = blob if len(group) == 1 else blob[info.begin - base : info.end - base]
                shape, dtype = _storage_shape(info)
                out[info.name] = _as_typed(part, dtype, shape)
                self.paths[info.name] = COPY
        return out

    def read_rows(self, name: str, start: int, stop: int) -> mx.array:
        """Rows ``start:stop`` of the leading axis (clipped to the tensor), reading only them.

        Raises:
            UnsupportedIndexError: (a ValueError) the tensor has no leading axis, or its rows
                don't end on whole bytes.
        """
        info = self.info(name)
        if not info.shape:
            raise UnsupportedIndexError(
                f"{self.path}: tensor {name!r} is a scalar and can't be sliced"
            )
        rows = info.shape[0]
        start, stop = max(0, min(start, rows)), max(0, min(stop, rows))
        return self.read_block(name, rows=(start, max(start, stop)))

    def read_block(
        self, name: str, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None
    ) -> mx.array:
        """A block ``[r0:r1, ..., c0:c1]`` of a tensor: leading-axis rows and last-axis columns.

        Only the bytes of the block are read (one range per row when columns are cut), straight
        into one MLX buffer. This is what a tensor-parallel rank needs: a block of output rows
        (contiguous in the file) or a block of input columns (strided).

        Args:
            name: Tensor name (at least 2-D when ``cols`` is given).
            rows: ``(start, stop)`` on axis 0, default all.
            cols: ``(start, stop)`` on the last axis, default all.

        Raises:
            UnsupportedIndexError: (a ValueError) out-of-range bounds, or a dtype whose
                rows/columns aren't whole bytes.
        """
        return self.read_blocks([(name, name, rows, cols)])[name]

    def read_blocks(self, requests: Iterable[tuple]) -> dict:
        """Many blocks in one batched read: ``(key, name, rows, cols)`` -> ``{key: array}``.

        Same as :meth:`read_block` for each request, but one pass of reads and one evaluation
        for all of them, which matters when a tensor-parallel rank needs hundreds of blocks.
        """
        plans = [(key, *self._plan_block(name, rows, cols)) for key, name, rows, cols in requests]
        self._check_allocatable([(block.name, block.nbytes) for _, _, block in plans])
        with self._reading():
            self.check_unchanged()
            raw = self._copy_ranges(
                [(str(i), p[1]) for i, p in enumerate(plans)],
                {str(i): _row_bytes(p[2]) for i, p in enumerate(plans)},
            )
            out = {}
            for i, (key, _, info) in enumerate(plans):
                shape, dtype = _storage_shape(info)
                out[key] = _as_typed(raw[str(i)], dtype, shape)
            mx.eval(list(out.values()))
        return out

    def _plan_block(
        self, name: str, rows: tuple[int, int] | None, cols: tuple[int, int] | None
    ) -> tuple[list[tuple[int, int]], TensorInfo]:
        """File ranges of a block, and a TensorInfo describing the block's dtype and shape."""
        info = self.info(name)
        shape = info.shape
        if not shape:
            raise UnsupportedIndexError(
                f"{self.path}: tensor {name!r} is a scalar and can't be sliced"
            )
        bits = DTYPES[info.dtype].bits
        r0, r1 = rows if rows is not None else (0, shape[0])
        c0, c1 = cols if cols is not None else (0, shape[-1])
        if cols is not None and len(shape) < 2:
            raise UnsupportedIndexError(
                f"{self.path}: tensor {name!r} is 1-D; cut it by rows instead"
            )
        if not (0 <= r0 <= r1 <= shape[0] and 0 <= c0 <= c1 <= shape[-1]):
            raise UnsupportedIndexError(
                f"{self.path}: tensor {name!r} of shape {shape}: block rows {r0}:{r1}, "
                f"columns {c0}:{c1} is out of range"
            )
        row_bits = math.prod(shape[1:]) * bits
        if cols is None or ((c0, c1) == (0, shape[-1]) and len(shape) > 1):
            if row_bits % 8:
                raise UnsupportedIndexError(
                    f"{self.path}: tensor {name!r}: rows of {info.dtype} are {row_bits} bits and "
                    "don't end on whole bytes; read the whole tensor instead"
                )
            start = info.offset + r0 * row_bits // 8
            pieces = [(start, (r1 - r0) * row_bits // 8)]
            block_shape = (r1 - r0, *shape[1:])
        else:
            if (c0 * bits) % 8 or (c1 * bits) % 8 or (shape[-1] * bits) % 8:
                raise UnsupportedIndexError(
                    f"{self.path}: tensor {name!r}: {info.dtype} columns {c0}:{c1} don't start "
                    "and end on whole bytes"
                )
            line = shape[-1] * bits // 8  # bytes per last-axis line
            lines_per_row = math.prod(shape[1:-1])
            first, count = r0 * lines_per_row, (r1 - r0) * lines_per_row
            lo, width = c0 * bits // 8, (c1 - c0) * bits // 8
            pieces = [(info.offset + (first + k) * line + lo, width) for k in range(count)]
            block_shape = (r1 - r0, *shape[1:-1], c1 - c0)
        nbytes = sum(n for _, n in pieces)
        block = TensorInfo(name, info.dtype, block_shape, 0, nbytes, 0)
        _check_mlx_shape(self.path, block)
        return pieces, block

    def block_ranges(
        self, name: str, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None
    ) -> list[tuple[int, int]]:
        """``(file offset, nbytes)`` of each range :meth:`read_block` reads for this block
        (what has to be fetched first when the file is fetched range by range).

        Raises:
            TensorNotFoundError: no tensor ``name`` in the file.
            UnsupportedIndexError: as :meth:`read_block`.
        """
        return self._plan_block(name, rows, cols)[0]

    def _check_readable(self, segments: list[tuple]) -> None:
        for segment in segments:
            pieces = segment[1] if len(segment) == 2 else [segment[1:3]]
            for offset, nbytes in pieces:
                if not self._readable.covers(offset, offset + nbytes):
                    raise RangeNotFetchedError(
                        f"{self.path}: bytes {offset}-{offset + nbytes} were read but never "
                        "fetched (the file was fetched range by range); this is a bug in "
                        "mlxload: please report it, and load with fetch='files' meanwhile"
                    )

    def _check_allocatable(self, copies: list[tuple[str, int]]) -> None:
        """Refuse a copy (``(name, nbytes)``) larger than this machine's memory: MLX 0.32's
        CPU allocator answers a failed allocation with a NULL buffer, not an error (the reader
        refuses that too; this says why, by name, before anything is asked of MLX).

        Raises:
            MemoryLimitError: naming the tensor, its size and the machine's memory.
        """
        if not copies:
            return
        name, nbytes = max(copies, key=itemgetter(1))
        memory = physical_memory()
        if 0 < memory < nbytes:
            raise MemoryLimitError(
                f"{self.path}: tensor {name!r} is {human_bytes(nbytes)}, more than this "
                f"machine's memory ({human_bytes(memory)}); read it in parts "
                "(get_slice(name)[start:stop]), or on a machine with more memory"
            )

    def _copy_ranges(
        self, segments: list[tuple], row_bytes: dict[str, int] | None = None
    ) -> dict[str, mx.array]:
        if self._readable is not None:
            self._check_readable(segments)
        try:
            stream = SegmentStream(self._fd, segments, evict=self._evict, row_bytes=row_bytes)
        except UnsupportedShapeError as e:
            raise UnsupportedShapeError(f"{self.path}: {e}") from None
        try:
            arrays = mx.load(stream, format="safetensors")
            mx.eval(list(arrays.values()))
        except (RuntimeError, OSError) as e:  # (MLX's CUDA build passes an OSError on as is)
            self.check_unchanged()
            if stream.short_read:
                raise self._ended_early() from None
            # MLX passes on an error raised in our reader as its traceback: keep its last line.
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise MlxloadError(f"{self.path}: reading tensor data failed: {reason}") from e
        # Checked before reading too; checking again after catches a file rewritten (same
        # size) while it was being read, whose bytes would otherwise be silently wrong.
        self.check_unchanged()
        self._evict_copied(stream.file_ranges)
        return arrays

    def _evict_copied(self, ranges: list[tuple[int, int]]) -> None:
        """With ``evict_page_cache``: drop the page cache of ``ranges`` (``(offset, nbytes)``,
        just copied) again, reaching into neighbouring bytes copied before.

        Each read has advised its own ranges already, but the kernel drops only page-cache
        folios wholly inside an advised range: a folio (up to a few MiB) straddling two tensors
        read one at a time stayed cached, 243 of 256 MiB for 64 KiB tensors.
        """
        if not self._evict or len(ranges) > _EVICT_RANGES:
            return  # (a column block: a piece per row, each advised as read, is left so)
        for offset, nbytes in ranges:
            self._copied.add(offset, offset + nbytes)
        for offset, nbytes in ranges:
            around = self._copied.around(offset)
            if nbytes and around is not None:
                lo = max(around[0], offset - _EVICT_REACH)
                hi = min(around[1], offset + nbytes + _EVICT_REACH)
                os.posix_fadvise(self._fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)

    def _view_in_place(self, info: TensorInfo) -> mx.array | None:
        """The tensor as a view of the mapped file, or None when it must be copied."""
        shape, dtype = _storage_shape(info)
        if info.offset % max(1, dtype.size) or info.nbytes == 0:
            return None
        with self._lock:
            if self._mmap is None:
                # Private copy-on-write pages: should MLX ever write into a buffer it thinks
                # it owns, the write lands in a private copy instead of faulting.
                self._mmap = mmap.mmap(self._fd, 0, access=mmap.ACCESS_COPY)
            mapping = self._mmap
        window_start = info.offset - info.offset % _PAGE
        if info.offset + info.nbytes - window_start > MAX_DIM:
            return None  # a flat uint8 window this long is past MLX's 32-bit dimensions
        window = _page_window(mapping, window_start, info.offset + info.nbytes)
        base = _import_no_copy(window)
        if base is None:
            return None
        skip = info.offset - window_start
        return _as_typed(base[skip : skip + info.nbytes], dtype, shape)


def _page_window(mapping: mmap.mmap, start: int, end: int) -> np.ndarray:
    """Mapped bytes from ``start`` (page-aligned) to ``end`` rounded up to a whole page.

    Metal wraps host memory only as whole pages (``newBufferWithBytesNoCopy`` wants a
    page-aligned pointer *and* length). Near the end of the file the rounded window runs past
    the last byte into the rest of the last mapped page (zeros), which a Python ``mmap``
    won't hand out, so that window is built from its address; it keeps the mapping alive.
    """
    mapped = -(-len(mapping) // mmap.PAGESIZE) * mmap.PAGESIZE  # what the OS really mapped
    stop = min(-(-end // _PAGE) * _PAGE, mapped)
    if stop <= len(mapping):
        return np.frombuffer(mapping, dtype=np.uint8, count=stop - start, offset=start)
    anchor = ctypes.c_char.from_buffer(mapping, start)  # pins the mapping while it lives
    window_type = type("_TailWindow", (ctypes.c_uint8 * (stop - start),), {})
    window = window_type.from_address(ctypes.addressof(anchor))
    window.anchor = anchor
    return np.frombuffer(window, dtype=np.uint8)


def _split_by_size(infos: list[TensorInfo]) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The tensors to copy by :meth:`TensorFile._copy_small`, and those to stream.

    * A read of a few small tensors is all copied: one stream read costs more than copying up
      to 1 MiB twice (1 MiB: 92 against 240 us; at 4 MiB streaming wins).
    * In a larger read, whole runs of adjacent tensors go one way or the other, so a run
      streamed stays one read (taking the norms out from between the weights made each weight
      a read of its own: 2.5x slower). A run is copied when its tensors average at most 16 KiB:
      then evaluating their views (~7 us each) costs more than copying them twice (32-60 KiB
      tensors were 15-40% slower copied).
    * A tensor of more than 32 dimensions is streamed (numpy holds no more), and in a larger
      read so is a run holding float64, which a copy would have to evaluate anyway.
    """
    if (
        len(infos) <= _SMALL_READ_COUNT
        and sum(i.nbytes for i in infos) <= _SMALL_READ_BYTES
        and all(len(i.shape) <= _HOST_MAX_NDIM for i in infos)
    ):
        return infos, []
    small: list[TensorInfo] = []
    large: list[TensorInfo] = []
    for run in _adjacent_runs(infos, _group_bytes()):
        copied = _extent(run)[1] <= len(run) * _SMALL_TENSOR_BYTES and all(
            len(i.shape) <= _HOST_MAX_NDIM and not needs_evaluation(_storage_shape(i)[1])
            for i in run
        )
        (small if copied else large).extend(run)
    return small, large


def _adjacent_runs(infos: list[TensorInfo], limit: int, align: int = 1) -> list[list[TensorInfo]]:
    """Tensors in file order, cut into runs that are contiguous in the file, span at most
    ``limit`` bytes, and hold each tensor at a multiple of its element size (and of ``align``)
    from the run's start (so it can be viewed in one buffer holding the run)."""
    runs: list[list[TensorInfo]] = []
    for info in sorted(infos, key=_by_offset):
        run = runs[-1] if runs else None
        if (
            run is not None
            and info.begin == run[-1].end
            and (info.begin - run[0].begin) % max(_view_alignment(info), align) == 0
            and info.end - run[0].begin <= limit
        ):
            run.append(info)
        else:
            runs.append([info])
    return runs


def _extent(run: list[TensorInfo]) -> tuple[int, int]:
    """``(file offset, nbytes)`` of a run of adjacent tensors."""
    return run[0].offset, run[-1].end - run[0].begin


def _row_bytes(info: TensorInfo) -> int | None:
    """Bytes of one leading-axis row of a tensor's storage (None for fewer than 2 dims)."""
    shape, dtype = _storage_shape(info)
    if len(shape) < 2:
        return None
    return math.prod(shape[1:]) * dtype.size


def _view_alignment(info: TensorInfo) -> int:
    """What a tensor's offset from its group's start must be a multiple of for it to be viewed
    in the group's buffer: its element size (MLX buffers start 16-byte aligned), so byte
    tensors group wherever they are. (A 16-byte rule left 200k one-byte tensors as 200k reads:
    22 s against safetensors' 1 s.)"""
    return max(1, _storage_shape(info)[1].size)


def _by_offset(info: TensorInfo) -> int:
    return info.begin


def _group_bytes() -> int:
    env = os.environ.get("MLXLOAD_GROUP_BYTES")
    limit = int(env) if env and env.isdigit() else _GROUP_BYTES
    return min(limit, MAX_DIM)  # a group is sliced as one flat array


def _as_typed(raw: mx.array, dtype: mx.Dtype, shape: tuple[int, ...]) -> mx.array:
    """Reinterpret a uint8 array, flat or ``[n, d]`` (see :func:`~.segment_stream.u8_shape`),
    as ``dtype`` and ``shape`` (no copy: MLX views share row-contiguous buffers)."""
    stream = host_stream(dtype)
    if dtype != mx.uint8:
        raw = mx.view(raw, dtype, stream=stream)
    return mx.reshape(raw, shape, stream=stream)
