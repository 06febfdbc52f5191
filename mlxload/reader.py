"""The single-file API, shaped like the reference ``safetensors`` library's.

Example:
    >>> import mlx.core as mx, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> mx.save_safetensors(path, {"w": mx.arange(6).reshape(3, 2)})
    >>> with safe_open(path) as f:
    ...     print(f.keys(), f.get_slice("w")[1:].tolist())
    ['w'] [[2, 3], [4, 5]]
    >>> sorted(load_file(path))
    ['w']
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import mlx.core as mx

from mlxload.dtypes import DTYPES
from mlxload.errors import InvalidArgumentError, TensorIndexError, UnsupportedIndexError
from mlxload.header import TensorInfo
from mlxload.index_check import checked_index
from mlxload.tensor_file import TensorFile

__all__ = ["TensorSlice", "load_file", "safe_open"]


class TensorSlice:
    """``f.get_slice(name)``: index it to read only the rows you ask for.

    The leading-axis part of the index decides which bytes are read; any further indices are
    applied in MLX to those rows.
    """

    def __init__(self, file: TensorFile, name: str) -> None:
        self._file = file
        self._info = file.info(name)

    def get_shape(self) -> list[int]:
        """The tensor's shape as a list (as safetensors' ``get_shape``)."""
        return list(self._info.shape)

    def get_dtype(self) -> str:
        """The tensor's safetensors dtype name, e.g. ``"BF16"`` (as safetensors' ``get_dtype``)."""
        return self._info.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape as a tuple."""
        return self._info.shape

    def __getitem__(self, index: Any) -> mx.array:
        if not isinstance(index, tuple):
            index = (index,)
        index = checked_index(index, self._info.shape, self._index_error)
        whole = all(_is_whole(i) for i in index)  # (true of an empty index too)
        if DTYPES[self._info.dtype].bits < 8 and not whole:
            self._check_packed_index(index)
        if whole:
            return self._file.read([self._info.name])[self._info.name]
        if not self._info.shape:
            return self._apply(self._file.read([self._info.name])[self._info.name], index)
        first, rest = index[0], index[1:]
        rows = self._info.shape[0]
        if isinstance(first, int):
            i = first + rows if first < 0 else first  # (in bounds: checked above)
            part = self._file.read_rows(self._info.name, i, i + 1)
            # The same index on the one row read, not part[0][rest]: with an index array in
            # rest, an int is an advanced index too and moves where the result's axes go.
            return self._apply(part, (0, *rest))
        if isinstance(first, slice):
            start, stop, step = first.indices(rows)
            lo, hi = (start, stop) if step > 0 else (stop + 1, start + 1)
            part = self._file.read_rows(self._info.name, lo, max(lo, hi))
            if step != 1:
                part = self._apply(part, (slice(None, None, step),))
            return self._apply(part, (slice(None), *rest)) if rest else part
        return self._apply(self._file.read([self._info.name])[self._info.name], index)

    def _apply(self, part: mx.array, index: tuple) -> mx.array:
        """``part[index]``, MLX's refusals (index arrays that don't broadcast...) as our
        IndexError naming the tensor."""
        try:
            if part.dtype != mx.float64:
                return part[index]
            # MLX makes float64 arrays on the CPU only (a GPU stream refuses them): index the
            # bits, and view them as float64 there.
            bits = mx.view(part, mx.uint64, stream=mx.cpu)
            return mx.view(bits[index], mx.float64, stream=mx.cpu)
        except ValueError as e:
            self._index_error(str(e))

    def _index_error(self, problem: str) -> NoReturn:
        raise TensorIndexError(
            f"{self._file.path}: tensor {self._info.name!r} of shape {list(self._info.shape)}: "
            f"{problem}"
        )

    def _check_packed_index(self, index: tuple) -> None:
        """Sub-byte tensors come back as packed bytes, whose axes past the first aren't the
        tensor's: only a leading-axis int or slice (of a tensor with 2+ dims) means the same
        thing on both."""
        leading_only = isinstance(index[0], (int, slice)) and all(_is_whole(i) for i in index[1:])
        if not leading_only or len(self._info.shape) < 2:
            raise UnsupportedIndexError(
                f"{self._file.path}: tensor {self._info.name!r} is {self._info.dtype}, handed "
                "back as packed uint8 bytes: index only the leading axis of a tensor with 2 or "
                "more dims, then unpack"
            )


def _is_whole(index: object) -> bool:
    """``:`` or ``...`` (an array index has no truth value, so no ``==`` here)."""
    return index is Ellipsis or (isinstance(index, slice) and index == slice(None))


class safe_open:  # named like safetensors.safe_open on purpose
    """Open a safetensors file; only the header is read until you ask for a tensor.

    Args:
        path: The file.
        framework: Accepted for drop-in compatibility with ``safetensors.safe_open``: ``"mlx"``
            (or ``"mx"``); anything else is refused.
        device: Accepted for compatibility and ignored: MLX arrays live in unified memory
            (Metal) or host memory (CPU); there is no device to place them on.
        zero_copy: ``"auto"`` (map on Metal, one copy elsewhere), True, or False.
        evict_page_cache: Drop copied ranges from the page cache, so the model is not held
            twice in RAM (copy path, Linux only).

    Raises:
        SafetensorsError: invalid header.
        InvalidArgumentError: a framework other than ``"mlx"``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        framework: str = "mlx",
        device: str | None = None,
        *,
        zero_copy: bool | str = "auto",
        evict_page_cache: bool = False,
    ) -> None:
        if framework not in ("mlx", "mx"):
            raise InvalidArgumentError(
                f"framework must be 'mlx' or 'mx' (mlxload.safe_open loads MLX arrays), got "
                f"{framework!r}"
            )
        self._file = TensorFile(path, zero_copy=zero_copy, evict_page_cache=evict_page_cache)

    def __enter__(self) -> safe_open:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def close(self) -> None:
        """Close the file (arrays already read stay valid); later reads raise."""
        self._file.close()

    def keys(self) -> list[str]:
        """Tensor names in file (offset) order."""
        return list(self._file.tensors)

    def metadata(self) -> dict[str, str] | None:
        """The ``__metadata__`` map; None when the file has none (as in ``safetensors``)."""
        header = self._file.header
        return dict(header.metadata) if header.has_metadata else None

    def info(self, name: str) -> TensorInfo:
        """Dtype, shape, byte offsets and size of tensor ``name``, from the header alone.

        Raises:
            TensorNotFoundError: no such tensor (a ``KeyError``; a close name is suggested).
        """
        return self._file.info(name)

    def get_tensor(self, name: str) -> mx.array:
        """Read tensor ``name`` (evaluated; one copy, or a view of the file on Metal).

        Raises:
            TensorNotFoundError: no such tensor (a ``KeyError``).
            FileChangedError: the file was truncated or replaced since it was opened.
        """
        return self._file.read([name])[name]

    def get_slice(self, name: str) -> TensorSlice:
        """A :class:`TensorSlice` of tensor ``name``: ``f.get_slice(name)[a:b]`` reads only
        rows ``a:b``.

        Raises:
            TensorNotFoundError: no such tensor (a ``KeyError``).
        """
        return TensorSlice(self._file, name)

    @property
    def paths(self) -> dict[str, str]:
        """Tensor name -> ``"zero-copy"`` / ``"copy"`` for each tensor read so far."""
        return dict(self._file.paths)


def load_file(
    path: str | os.PathLike, *, zero_copy: bool | str = "auto", evict_page_cache: bool = False
) -> dict[str, mx.array]:
    """Load every tensor of a file, evaluated (like ``mx.load``), in file order.

    Args:
        path: The file.
        zero_copy: ``"auto"`` (map on Metal, one copy elsewhere), True, or False.
        evict_page_cache: Drop copied ranges from the page cache (copy path, Linux only).

    Returns:
        Tensor name -> evaluated ``mx.array``.

    Raises:
        CheckpointNotFoundError: no such file (a ``FileNotFoundError`` too).
        SafetensorsError: invalid header.
        FileChangedError: the file changed while it was read.
    """
    file = TensorFile(path, zero_copy=zero_copy, evict_page_cache=evict_page_cache)
    try:
        return file.read(list(file.tensors))
    finally:
        file.close()
