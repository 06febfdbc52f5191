"""Parse and validate a safetensors header, touching no tensor data.

A safetensors file is ``u64 little-endian N`` + ``N`` bytes of JSON + a data section. The JSON
maps tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to
the data section) plus an optional ``"__metadata__"`` string map. :func:`read_header` reads only
the first ``8 + N`` bytes and validates every rule of the reference ``safetensors`` library
(and a few more), raising one :class:`~mlxload.errors.SafetensorsError` subclass per rule.

Example:
    >>> import mlx.core as mx, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> mx.save_safetensors(path, {"w": mx.zeros((2, 3))})
    >>> header = read_header(path)
    >>> header.tensors["w"].shape, header.tensors["w"].dtype
    ((2, 3), 'F32')
"""

from __future__ import annotations

import gc
import json
import os
import struct
from array import array
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import reduce
from operator import iadd, itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlxload.dtypes import DTYPES
from mlxload.errors import (
    DataSizeMismatchError,
    DuplicateFieldError,
    FileTooSmallError,
    HeaderEncodingError,
    HeaderJSONError,
    HeaderLengthError,
    HeaderNotObjectError,
    HeaderTooLargeError,
    InvalidDataOffsetsError,
    InvalidMetadataError,
    InvalidShapeError,
    MissingFieldError,
    NestingTooDeepError,
    NonContiguousOffsetsError,
    SizeOverflowError,
    SubByteAlignmentError,
    TensorEntryError,
    TensorSizeMismatchError,
    UnknownDtypeError,
)
from mlxload.file_identity import file_identity, open_regular

__all__ = [
    "MAX_HEADER_SIZE",
    "FileHeader",
    "TensorInfo",
    "TensorTable",
    "parse_header",
    "read_header",
    "read_header_fd",
]

MAX_HEADER_SIZE = 100_000_000
"""Largest header the reference library accepts (bytes)."""

_U64_MAX = 2**64 - 1
_FAST_MAX_NDIM = 64  # longer shapes (valid ones too) are checked one by one, with early exits
_FAST_MAX_DATA = _U64_MAX // 8  # below it, no tensor's bits pass 64 bits
_FAST_SIZE_LIMIT = float(2**62)  # byte sizes under it are exact in uint64, with room for error
_FIELDS = ("dtype", "shape", "data_offsets")
_GET_DTYPE, _GET_SHAPE, _GET_OFFSETS = (itemgetter(k) for k in ("dtype", "shape", "data_offsets"))
_BYTE_DTYPES = frozenset(name for name, d in DTYPES.items() if d.bits % 8 == 0)
_BYTES = {name: d.bits // 8 for name, d in DTYPES.items() if d.bits % 8 == 0}
_MAX_ITEMSIZE = max(_BYTES.values())


class TensorInfo:
    """Where one tensor lives in its file and what it is.

    Attributes:
        name: Tensor name.
        dtype: safetensors dtype name (``"F16"``, ``"F8_E4M3"``, ...); the true dtype even when
            MLX holds the tensor as raw ``uint8``.
        shape: Logical shape.
        begin, end: ``data_offsets``, relative to the data section.
        data_start: Absolute file offset of the data section.
    """

    __slots__ = ("begin", "data_start", "dtype", "end", "name", "shape")

    def __init__(
        self, name: str, dtype: str, shape: tuple[int, ...], begin: int, end: int, data_start: int
    ) -> None:
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.begin = begin
        self.end = end
        self.data_start = data_start

    @property
    def offset(self) -> int:
        """Absolute file offset of the tensor's first byte."""
        return self.data_start + self.begin

    @property
    def nbytes(self) -> int:
        """Size of the tensor's bytes in the data section (``end - begin``)."""
        return self.end - self.begin

    @property
    def alignment(self) -> int:
        """Byte alignment needed to view the tensor in place (its element size)."""
        return DTYPES[self.dtype].alignment

    @property
    def zero_copy_ready(self) -> bool:
        """True when the absolute offset is a multiple of the element size (always for an
        empty tensor: it has no bytes to view or copy)."""
        return self.nbytes == 0 or self.offset % self.alignment == 0

    def as_dict(self) -> dict:
        """The header fields plus absolute offset and size, for printing and JSON."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "data_offsets": [self.begin, self.end],
            "offset": self.offset,
            "nbytes": self.nbytes,
            "zero_copy_ready": self.zero_copy_ready,
        }

    def __repr__(self) -> str:
        return (
            f"TensorInfo(name={self.name!r}, dtype={self.dtype}, shape={self.shape}, "
            f"offset={self.offset}, nbytes={self.nbytes})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorInfo):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)


class TensorTable(Mapping[str, TensorInfo]):
    """Name -> :class:`TensorInfo` in file (offset) order, built per tensor on first access.

    A 5,000-tensor header is validated in bulk; making 5,000 objects up front would cost more
    than the validation, so each :class:`TensorInfo` is created when first asked for.

    Args:
        names: Tensor names in file (offset) order.
        dtypes, shapes, begins, ends: Per tensor, in the order of ``listed`` (of ``names``
            when it is None): reordering five lists would cost more than the validation.
        data_start: Absolute file offset of the data section.
        listed: The names in the order of the other lists, when that isn't file order.
    """

    __slots__ = (
        "_begins",
        "_built",
        "_data_start",
        "_dtypes",
        "_ends",
        "_listed",
        "_names",
        "_pos",
        "_shapes",
    )

    def __init__(
        self,
        names: list[str],
        dtypes: list[str],
        shapes: Sequence[Sequence[int]],
        begins: list[int],
        ends: list[int],
        data_start: int,
        listed: list[str] | None = None,
    ) -> None:
        self._names = names
        self._listed = names if listed is None else listed
        self._dtypes = dtypes
        self._shapes = shapes
        self._begins = begins
        self._ends = ends
        self._data_start = data_start
        self._pos: dict[str, int] | None = None
        self._built: dict[str, TensorInfo] = {}

    def _positions(self) -> dict[str, int]:
        if self._pos is None:
            self._pos = dict(zip(self._listed, range(len(self._listed)), strict=True))
        return self._pos

    def __getitem__(self, name: str) -> TensorInfo:
        info = self._built.get(name)
        if info is None:
            i = self._positions()[name]
            info = TensorInfo(
                name,
                self._dtypes[i],
                tuple(self._shapes[i]),
                self._begins[i],
                self._ends[i],
                self._data_start,
            )
            self._built[name] = info
        return info

    def __contains__(self, name: object) -> bool:
        return name in self._positions()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"TensorTable({len(self)} tensors)"


@dataclass
class FileHeader:
    """A validated header.

    Attributes:
        path: The file it came from.
        header_size: ``N``, the JSON length in bytes.
        file_size: Size of the file when the header was read.
        tensors: Name -> info, in file (offset) order.
        metadata: ``__metadata__`` (empty when absent).
        has_metadata: Whether the header holds a ``__metadata__`` map (``null`` counts as
            absent, as in the reference), so an empty map can be told from none.
        identity: :func:`file_identity` of the file the header was read
            from (None for bytes parsed without a file): whoever reads tensor bytes later
            checks it, so one file's header is never paired with another file's data.
    """

    path: Path
    header_size: int
    file_size: int
    tensors: Mapping[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    identity: tuple[int, ...] | None = None
    has_metadata: bool = False

    @property
    def data_start(self) -> int:
        """File offset of the data section: the 8-byte length prefix plus the header."""
        return 8 + self.header_size

    @property
    def data_size(self) -> int:
        """Bytes in the data section: the file after the header."""
        return self.file_size - self.data_start


def read_header(path: str | os.PathLike) -> FileHeader:
    """Read and validate the header of a safetensors file (only its first 8 + N bytes).

    Args:
        path: The file.

    Returns:
        The validated :class:`FileHeader`.

    Raises:
        SafetensorsError: (a subclass per rule) when the file breaks the format.
        NotARegularFileError: a directory, FIFO, device or socket.
        CheckpointNotFoundError: no such file (a ``FileNotFoundError`` too).
        FilePermissionError: the OS refused to open it (a ``PermissionError`` too).
        TooManyOpenFilesError: the process has no file descriptor left.
    """
    path = Path(path)
    fd = open_regular(path)
    try:
        return read_header_fd(fd, path)
    finally:
        os.close(fd)


def read_header_fd(fd: int, path: Path) -> FileHeader:
    """Like :func:`read_header`, from an open descriptor: the header and the size checked come
    from the same file, even if the path is replaced meanwhile."""
    st = os.fstat(fd)
    file_size = st.st_size
    prefix = os.pread(fd, 8, 0)
    if len(prefix) < 8:
        raise FileTooSmallError(
            f"{path}: file is {file_size} bytes, shorter than the 8-byte header length; "
            "it is not a safetensors file or was cut off"
        )
    (n,) = struct.unpack("<Q", prefix)
    _check_header_length(path, n, file_size)
    raw = os.pread(fd, n, 8)
    if len(raw) < n:
        raise HeaderLengthError(f"{path}: file shrank while its header was read; open it again")
    header = parse_header(raw, file_size=file_size, path=path)
    header.identity = file_identity(st)
    return header


def _check_header_length(path: Path, n: int, file_size: int) -> None:
    if n > MAX_HEADER_SIZE:
        raise HeaderTooLargeError(
            f"{path}: header length {n} bytes is over the {MAX_HEADER_SIZE}-byte limit; "
            f"the file is corrupt or not safetensors{_what_it_is(n)}"
        )
    if 8 + n > file_size:
        raise HeaderLengthError(
            f"{path}: header length {n} bytes runs past the end of the {file_size}-byte file; "
            f"the file is truncated or not safetensors{_what_it_is(n)}"
        )


def _what_it_is(n: int) -> str:
    """A hint when the first 8 bytes (read as the length ``n``) are plainly another format.

    Only for lengths past the limit, and only on signatures a real length can't have: a
    truncated safetensors file whose length merely starts with ``{`` must get no false hint.
    """
    if n <= MAX_HEADER_SIZE:
        return ""
    head = n.to_bytes(8, "little")
    if head.startswith(b"PK\x03\x04"):
        return " (it is a zip archive: a PyTorch .bin/.pt checkpoint? convert it to safetensors)"
    if head.startswith(b"GGUF"):
        return " (it is a GGUF file: mlxload reads safetensors only)"
    if head[:1] == b"\x80" and head[1] in (2, 3, 4, 5):
        return " (it is a Python pickle: a PyTorch .bin checkpoint? convert it to safetensors)"
    if head[:1] == b"{" and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return " (it starts like a JSON file, e.g. config.json: pass the model's directory)"
    return ""


def parse_header(raw: bytes, *, file_size: int, path: str | os.PathLike = "<bytes>") -> FileHeader:
    """Validate header JSON bytes against a file of ``file_size`` bytes.

    Args:
        raw: The ``N`` header bytes (after the 8-byte prefix).
        file_size: Total file size, for the data-section check.
        path: Used in error messages.

    Returns:
        The validated :class:`FileHeader`.

    Raises:
        SafetensorsError: (a subclass per rule) when the header breaks the format.
    """
    path = Path(path)
    n = len(raw)
    _check_header_length(path, n, file_size)
    try:
        raw = bytes(raw)
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HeaderEncodingError(
            f"{path}: header is not valid UTF-8 (byte {e.start}: {e.reason})"
        ) from None
    if not text.startswith("{"):
        raise HeaderNotObjectError(
            f"{path}: header must be a JSON object starting with '{{', got {text[:20]!r}"
        )
    with _gc_paused():
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise HeaderJSONError(f"{path}: header is not valid JSON: {e}") from None
        if type(obj) is not dict:
            raise HeaderNotObjectError(
                f"{path}: header must be a JSON object, got {type(obj).__name__}"
            )
        if _needs_strict_reparse(text, obj, colons=_count_colons(raw)):
            obj = _strict_reparse(path, text)
        raw_metadata = obj.pop("__metadata__", None)
        metadata = _validate_metadata(path, raw_metadata)
        data_start = 8 + n
        table = _fast_validate(obj, file_size - data_start)
        if table is not None:
            del obj
    if table is None:
        # Something is wrong: walk the entries one by one to name the tensor and the rule.
        table = _slow_validate(path, obj, file_size - data_start)
    names, dtypes, shapes, begins, ends, listed = table
    return FileHeader(
        path=path,
        header_size=n,
        file_size=file_size,
        tensors=TensorTable(names, dtypes, shapes, begins, ends, data_start, listed),
        metadata=metadata,
        has_metadata=raw_metadata is not None,
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off while a header's objects are built.

    A 5,000-tensor header is some 20,000 new dicts and lists: with the collector on, every 700
    allocations start a collection that walks the young ones again (+0.8 ms, 20% of an open).
    JSON values hold no reference cycles, so nothing collectable is missed; the parsed JSON
    must be dropped before the collector is back on, or its first collection walks all of it.
    Left alone when the collector is already off (another thread's ``gc.disable()`` made during
    the pause is undone by it: that is the price).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_Table = tuple[
    list[str], list[str], Sequence[Sequence[int]], list[int], list[int], list[str] | None
]
"""Names in file order, dtypes, shapes, begins, ends, and the names in the order of those four
lists when it isn't file order (see :class:`TensorTable`)."""


def _fast_validate(obj: dict, data_size: int) -> _Table | None:
    """Validate every entry with bulk C-level operations; None when any rule may be broken.

    This is the hot path (5,000-tensor headers): ``map`` over the entries, ``array("Q")`` to
    check that every dim and offset is an integer in ``[0, 2**64)`` (it refuses floats, strings,
    negatives and bigger ints in C), then numpy for sizes and offset order. It never decides an
    error itself; on any doubt the caller re-validates entry by entry for a precise message.
    """
    entries = list(obj.values())
    n = len(entries)
    if not n:
        return ([], [], [], [], [], None) if data_size == 0 else None
    if data_size > _FAST_MAX_DATA:  # (no real file) the slow path checks each bit count
        return None
    try:
        dtypes = list(map(_GET_DTYPE, entries))
        shapes = list(map(_GET_SHAPE, entries))
        offsets = list(map(_GET_OFFSETS, entries))
        kinds = set(dtypes)
        if not kinds <= _BYTE_DTYPES:  # unknown, unhashable, or sub-byte (checked slowly)
            return None
        ndims = list(map(len, shapes))
        max_ndim = max(ndims)
        if set(map(len, offsets)) != {2} or max_ndim > _FAST_MAX_NDIM:
            return None
        dims = reduce(iadd, shapes, [])  # (faster than chain.from_iterable)
        flat_offsets = reduce(iadd, offsets, [])
        dims_u64 = np.frombuffer(array("Q", dims), np.uint64)
        offsets_u64 = np.frombuffer(array("Q", flat_offsets), np.uint64)
    except (KeyError, TypeError, OverflowError):
        return None
    if _holds_bool(dims, dims_u64) or _holds_bool(flat_offsets, offsets_u64):
        return None
    if 0 in ndims and any(type(s) is not list for s, d in zip(shapes, ndims, strict=True) if not d):
        return None  # "" and {} have no items either, but are not shapes
    begins, ends = offsets_u64[0::2], offsets_u64[1::2]
    if int(ends.max()) > data_size:
        return None
    ndims_i64 = np.fromiter(ndims, np.int64, n)
    dims_end = np.cumsum(ndims_i64)  # where each shape ends in dims
    counts = _element_counts(dims_u64, ndims_i64, dims_end, max_ndim, dtypes, kinds)
    if counts is None:
        return None
    elements, itemsizes = counts
    if not np.array_equal(elements * itemsizes, ends - begins):
        return None
    if not elements.all() and any(
        _checked_count(shapes[i]) is None for i in np.flatnonzero(elements == 0).tolist()
    ):
        return None
    names = list(obj)
    shapes = _FlatShapes(dims, dims_end)
    if np.array_equal(begins[1:], ends[:-1]):  # already in offset order (the reference's writer)
        if begins[0] != 0 or ends[-1] != data_size:
            return None
        return names, dtypes, shapes, flat_offsets[0::2], flat_offsets[1::2], None
    # In (begin, end) order (mx.save_safetensors writes another): one key, 3x faster than
    # lexsort. Equal keys are equal [x, x] entries (or two tensors at x, which overlap): those
    # keep their JSON order, as the slow path's stable sort does, so sorted again stably.
    key = begins * np.uint64(2) + (ends > begins)
    order = np.argsort(key)
    if np.any(key[order[1:]] == key[order[:-1]]):
        order = np.argsort(key, kind="stable")
    first, last = begins[order], ends[order]
    if first[0] != 0 or last[-1] != data_size or not np.array_equal(first[1:], last[:-1]):
        return None
    in_order = np.array(names, dtype=object)[order].tolist()
    return in_order, dtypes, shapes, flat_offsets[0::2], flat_offsets[1::2], names


class _FlatShapes(Sequence[tuple[int, ...]]):
    """Every shape in one flat list, cut on demand: a list per tensor kept for the file's
    lifetime would be 5,000 more objects for the garbage collector to walk again and again."""

    __slots__ = ("_bounds", "_dims", "_ends")

    def __init__(self, dims: list[int], ends: np.ndarray) -> None:
        self._dims = dims
        self._ends = ends  # where each shape ends in dims
        self._bounds: list[int] | None = None  # made on first use: an open needs none

    def __getitem__(self, i: int) -> tuple[int, ...]:  # type: ignore[override]
        bounds = self._bounds
        if bounds is None:
            bounds = self._bounds = [0, *self._ends.tolist()]
        return tuple(self._dims[bounds[i] : bounds[i + 1]])

    def __len__(self) -> int:
        return len(self._ends)


def _holds_bool(ints: list, as_u64: np.ndarray) -> bool:
    """Whether a JSON ``true``/``false`` stands among ``ints`` (``array`` took it for 1/0; the
    reference refuses it). Only the 0s and 1s can be one, so only those are looked at."""
    return any(type(ints[i]) is bool for i in np.flatnonzero(as_u64 <= 1).tolist())


def _element_counts(
    dims: np.ndarray,
    ndims: np.ndarray,
    dims_end: np.ndarray,
    max_ndim: int,
    dtypes: list[str],
    kinds: set[str],
) -> tuple[np.ndarray, np.ndarray | np.uint64] | None:
    """Each tensor's element count and item size (uint64); None when a byte size might pass
    ``_FAST_SIZE_LIMIT``: unless the largest dim to the most dims stays under it (then no
    product can wrap), products are taken in float64 too, so a wrapped uint64 product is
    never trusted. (A zero dim makes the product 0 however it wrapped; the caller checks those
    shapes with the reference's overflow rule.)"""
    elements = np.ones(len(ndims), np.uint64)
    with_dims = ndims > 0
    approx = np.ones(1)
    if dims.size:
        starts = (dims_end - ndims)[with_dims]
        if int(dims.max()) ** max_ndim * _MAX_ITEMSIZE > _FAST_SIZE_LIMIT:
            with np.errstate(all="ignore"):  # inf and 0 * inf (nan) are expected on bad shapes
                approx = np.multiply.reduceat(dims.astype(np.float64), starts)
        elements[with_dims] = np.multiply.reduceat(dims, starts)
    if len(kinds) == 1:
        itemsizes = np.uint64(_BYTES[dtypes[0]])
    else:
        itemsizes = np.fromiter(map(_BYTES.__getitem__, dtypes), np.uint64, len(dtypes))
    if not (approx.max() * _MAX_ITEMSIZE <= _FAST_SIZE_LIMIT):  # (nan fails it too)
        return None
    return elements, itemsizes


def _slow_validate(path: Path, obj: dict, data_size: int) -> _Table:
    infos = [_validate_entry(path, name, entry) for name, entry in obj.items()]
    infos.sort(key=_offsets_key)
    expected = 0
    for info in infos:
        if info.begin != expected:
            what = "a gap" if info.begin > expected else "an overlap"
            raise NonContiguousOffsetsError(
                f"{path}: tensor {info.name!r}: data_offsets {[info.begin, info.end]} leave "
                f"{what} (in offset order it must begin at {expected}); tensors must tile the "
                "data section from 0 without gaps or overlaps"
            )
        expected = info.end
    if data_size != expected:
        side = "shorter" if data_size < expected else "longer"
        raise DataSizeMismatchError(
            f"{path}: data section is {data_size} bytes, {side} than the {expected} bytes the "
            "header describes; the file is "
            + ("truncated (incomplete download?)" if side == "shorter" else "followed by junk")
        )
    return (
        [i.name for i in infos],
        [i.dtype for i in infos],
        [list(i.shape) for i in infos],
        [i.begin for i in infos],
        [i.end for i in infos],
        None,
    )


# -- where orjson is more lenient than the reference's serde_json --------------------------------
# orjson keeps the last of duplicate keys, nests up to 1024 levels and reads "-0" as the integer
# 0; the reference rejects a repeated field, nesting of 128 levels, and "-0" where it wants an
# unsigned integer. Ordinary headers are cleared by a few substring counts; only a header that
# might hit one of these cases is parsed again, slowly, with the stdlib's hooks.

_MAX_DEPTH = 127  # the reference accepts 127 nested arrays/objects and rejects 128


def _count_colons(raw: bytes) -> int:
    """``raw.count(b":")`` at memory speed (6x faster on a 450 KB header). In UTF-8 no byte
    of a multi-byte character is below 0x80, so it is also the text's count of ``:``."""
    return int(np.count_nonzero(np.frombuffer(raw, np.uint8) == ord(":")))


def _needs_strict_reparse(text: str, obj: dict, *, colons: int) -> bool:
    """Whether the header might repeat a field, nest deeply or hold a ``-0`` (C-speed scans).

    Every key is followed by a colon, so a header whose entries hold exactly the three fields
    has ``4 * entries (+ metadata keys)`` colons plus any inside strings. Fewer keys than that
    means a missing field, which validation reports anyway; so an exact count proves there is
    no repeated field, unknown field or nested object. When names or metadata hold colons or
    ``-0`` themselves, and the text has no escapes (so every string in it is verbatim what
    orjson returned), those are counted too: a repeated key adds a colon the parsed header
    doesn't have, whatever the strings hold. Anything else takes the slow, exact path.
    ``colons`` is the text's count of ``:`` (see :func:`_count_colons`).
    """
    metadata = obj.get("__metadata__")
    n = len(obj) - ("__metadata__" in obj)
    keys = 4 * n + ("__metadata__" in obj) + (len(metadata) if type(metadata) is dict else 0)
    negative_zero = "-" in text and "-0" in text
    if colons == keys and not negative_zero:
        return False
    if "\\" in text:
        return True
    strings = _parsed_strings(obj)
    return colons != keys + strings.count(":") or (
        negative_zero and text.count("-0") != strings.count("-0")
    )


def _parsed_strings(obj: dict) -> str:
    """Every string of a parsed header that may legitimately hold ``:`` or ``-0``, joined:
    names, dtypes and metadata (a ``\\x00`` between them, so none runs into the next)."""
    parts = list(obj)
    parts += [
        e["dtype"]
        for name, e in obj.items()
        # not __metadata__: a metadata key named "dtype" is counted with the metadata below
        if name != "__metadata__" and type(e) is dict and type(e.get("dtype")) is str
    ]
    metadata = obj.get("__metadata__")
    if type(metadata) is dict:
        parts += [*metadata, *(v for v in metadata.values() if type(v) is str)]
    return "\x00".join(parts)


class _Pairs(list):
    """An object's key/value pairs, in order, duplicates kept (``object_pairs_hook``)."""


def _strict_reparse(path: Path, text: str) -> dict:
    """Parse again keeping what orjson discards; raise where the reference would refuse.

    Returns the header as a dict in which ``-0`` is the float ``-0.0`` (so the shape and offset
    checks reject it as the reference does), duplicate tensor names keep the last entry.

    Raises:
        NestingTooDeepError, DuplicateFieldError; and the entry errors of an earlier entry of a
        repeated tensor name.
    """
    try:
        pairs = json.loads(text, object_pairs_hook=_Pairs, parse_int=_int_as_the_reference_reads)
    except RecursionError:  # deeper than the interpreter's limit, so far past the reference's
        raise NestingTooDeepError(
            f"{path}: header nests arrays/objects too deep to parse; the limit is {_MAX_DEPTH} "
            "(the reference parser's recursion limit)"
        ) from None
    names = [k for k, _ in pairs]
    if names.count("__metadata__") > 1:
        raise DuplicateFieldError(f"{path}: header has {names.count('__metadata__')} __metadata__")
    for name, entry in pairs:
        if not isinstance(entry, _Pairs):
            continue
        if name == "__metadata__":
            # The reference checks every value's type, a repeated key's earlier ones too.
            for key, item in entry:
                _check_metadata_value(path, key, item)
            continue
        keys = [k for k, _ in entry]
        for key in _FIELDS:
            if keys.count(key) > 1:
                raise DuplicateFieldError(
                    f"{path}: tensor {name!r}: field {key!r} appears {keys.count(key)} times"
                )
        if len(keys) > len(_FIELDS):
            _check_unknown_fields_depth(path, name, entry)
    last = {name: i for i, (name, _) in enumerate(pairs)}
    for i, (name, entry) in enumerate(pairs):
        if name != "__metadata__" and last[name] != i:
            # A repeated name keeps its last entry (as the reference and json do), but the
            # reference's parser checks the types of every entry: an earlier, broken one is an
            # error. (Its sizes and offsets are checked for the last entry only.)
            _entry_fields(path, name, _as_dict(entry))
    return {name: _as_dict(value) for name, value in pairs}


def _as_dict(value: object) -> object:
    """An object's pairs as a dict (a repeated key keeps its last value, as in the reference).

    One level only: a valid header holds no object below an entry, and what an invalid one
    holds there only has to fail the type checks, which a ``_Pairs`` (a list) does."""
    return dict(value) if isinstance(value, _Pairs) else value


def _check_unknown_fields_depth(path: Path, name: str, entry: _Pairs) -> None:
    """The reference ignores fields it doesn't know, but parses them: deep nesting there is an
    error. (Anywhere else, arrays or objects below an entry's fields fail the type checks.)"""
    for key, value in entry:
        if key not in _FIELDS and type(value) in (list, _Pairs):
            depth = 2 + _max_depth(value)  # the header object, then the entry
            if depth > _MAX_DEPTH:
                raise NestingTooDeepError(
                    f"{path}: tensor {name!r}: field {key!r} nests arrays/objects: the header "
                    f"is {depth} levels deep; the limit is {_MAX_DEPTH} (the reference "
                    "parser's recursion limit)"
                )


def _int_as_the_reference_reads(token: str) -> int | float:
    """``-0`` becomes ``-0.0`` and integers past 64 bits become floats, as the reference's
    parser reads them; so the shape and offset checks refuse both, as the reference does."""
    value = int(token)
    if value == 0 and token.startswith("-"):
        return -0.0
    return float(value) if value > _U64_MAX else value


def _max_depth(value: list) -> int:
    """How deeply ``value`` (an array or object, counted as 1) nests arrays/objects."""
    deepest = 0
    stack: list[tuple[list, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        items = (v for _, v in node) if isinstance(node, _Pairs) else node
        stack.extend((v, depth + 1) for v in items if type(v) in (_Pairs, list))
    return deepest


def _checked_count(shape: list[int]) -> int | None:
    """``prod(shape)``, or None once a partial product passes 64 bits: the reference multiplies
    left to right with overflow checks, so ``[2**32, 2**32, 0]`` is an error there, and
    stopping early keeps a shape of 50,000 huge dims from costing minutes of big-int work."""
    count = 1
    for dim in shape:
        count *= dim
        if count > _U64_MAX:
            return None
    return count


def _offsets_key(info: TensorInfo) -> tuple[int, int]:
    return (info.begin, info.end)


def _validate_metadata(path: Path, metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if type(metadata) is not dict:
        raise InvalidMetadataError(
            f"{path}: __metadata__ must be an object of strings, got {type(metadata).__name__}"
        )
    for key, value in metadata.items():
        _check_metadata_value(path, key, value)
    return metadata


def _check_metadata_value(path: Path, key: str, value: object) -> None:
    if type(value) is not str:
        if isinstance(value, _Pairs):
            value = dict(value)
        raise InvalidMetadataError(
            f"{path}: __metadata__[{key!r}] must be a string, got "
            f"{type(value).__name__} {value!r:.60}"
        )


def _entry_fields(path: Path, name: str, entry: object) -> tuple[Any, str, list, list]:
    """The types of one entry, checked as the reference's parser checks them while parsing:
    ``(dtype spec, dtype, shape, data_offsets)``."""
    if type(entry) is not dict:
        raise TensorEntryError(
            f"{path}: tensor {name!r}: entry must be an object with dtype, shape and "
            f"data_offsets, got {type(entry).__name__}"
        )
    try:
        dtype = entry["dtype"]
        shape = entry["shape"]
        offsets = entry["data_offsets"]
    except KeyError:
        missing = [k for k in _FIELDS if k not in entry]
        raise MissingFieldError(
            f"{path}: tensor {name!r}: entry lacks {', '.join(missing)} (has {sorted(entry)})"
        ) from None
    spec = DTYPES.get(dtype) if type(dtype) is str else None
    if spec is None:
        raise UnknownDtypeError(
            f"{path}: tensor {name!r}: unknown dtype {dtype!r}; known: {', '.join(DTYPES)}"
        )
    if type(shape) is not list or not all(type(d) is int and 0 <= d <= _U64_MAX for d in shape):
        raise InvalidShapeError(
            f"{path}: tensor {name!r}: shape must be a list of non-negative integers, "
            f"got {shape!r:.80}"
        )
    if (
        type(offsets) is not list
        or len(offsets) != 2
        or not all(type(o) is int and 0 <= o <= _U64_MAX for o in offsets)
    ):
        raise InvalidDataOffsetsError(
            f"{path}: tensor {name!r}: data_offsets must be [begin, end] with "
            f"0 <= begin <= end, got {offsets!r:.80}"
        )
    return spec, dtype, shape, offsets


def _validate_entry(path: Path, name: str, entry: object) -> TensorInfo:
    """One tensor's entry, checked; its offsets are relative to the data section."""
    spec, dtype, shape, offsets = _entry_fields(path, name, entry)
    if offsets[1] < offsets[0]:
        raise InvalidDataOffsetsError(
            f"{path}: tensor {name!r}: data_offsets must be [begin, end] with "
            f"0 <= begin <= end, got {offsets!r:.80}"
        )
    begin, end = offsets
    count = _checked_count(shape)
    bits = count * spec.bits if count is not None else None
    if bits is None or bits > _U64_MAX:
        raise SizeOverflowError(
            f"{path}: tensor {name!r}: shape {shape} x {spec.bits} bits overflows 64 bits"
        )
    if bits % 8:
        raise SubByteAlignmentError(
            f"{path}: tensor {name!r}: {count} elements of {dtype} ({spec.bits} bits) are "
            f"{bits} bits, which does not end on a whole byte"
        )
    if bits // 8 != end - begin:
        raise TensorSizeMismatchError(
            f"{path}: tensor {name!r}: shape {shape} of {dtype} needs {bits // 8} bytes but "
            f"data_offsets {offsets} span {end - begin}"
        )
    return TensorInfo(name, dtype, tuple(shape), begin, end, 0)
