"""Output layout: tensor order and the padded header, decided before any byte is written.

Tensors go in descending alignment (element size) then name, and the header is padded with
spaces so the data section starts on a 16 KiB boundary (Apple silicon's page size). Every
tensor's size is a multiple of its element size, so each one then starts at an absolute
offset that is a multiple of its own element size: the file is zero-copy ready everywhere.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from mlxload.dtypes import DTYPES
from mlxload.header import TensorInfo

__all__ = ["PAGE_SIZE", "Placed", "build_header", "order_key", "place"]

PAGE_SIZE = 16384
"""The data section of every written file starts on a multiple of this (bytes)."""


@dataclass(frozen=True)
class Placed:
    """One tensor's place in an output file.

    Attributes:
        name, dtype, shape: As in the source header.
        begin, end: The output ``data_offsets`` (relative to the data section).
        src_offset: Absolute offset of its bytes in the source shard.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int
    src_offset: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def order_key(info: TensorInfo) -> tuple[int, str]:
    """Sort key: descending alignment, then name (independent of how shards interleave)."""
    return (-DTYPES[info.dtype].alignment, info.name)


def place(infos: Iterable[TensorInfo]) -> list[Placed]:
    """Lay tensors out back to back in :func:`order_key` order.

    Sizes come from the source ``data_offsets``, never from the shape.
    """
    placed = []
    pos = 0
    for info in sorted(infos, key=order_key):
        placed.append(
            Placed(info.name, info.dtype, info.shape, pos, pos + info.nbytes, info.offset)
        )
        pos += info.nbytes
    return placed


def build_header(placed: list[Placed], metadata: dict[str, str]) -> bytes:
    """The 8-byte length plus header JSON, space-padded so its length is a page multiple.

    Args:
        placed: Tensors in output order (see :func:`place`).
        metadata: ``__metadata__``; omitted when empty.

    Returns:
        The bytes that precede the data section.
    """
    obj: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    for p in placed:
        obj[p.name] = {"dtype": p.dtype, "shape": list(p.shape), "data_offsets": [p.begin, p.end]}
    raw = orjson.dumps(obj)
    total = -(-(8 + len(raw)) // PAGE_SIZE) * PAGE_SIZE
    return struct.pack("<Q", total - 8) + raw + b" " * (total - 8 - len(raw))
