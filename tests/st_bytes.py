"""Build safetensors files byte by byte, valid or deliberately broken, for reader tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path

__all__ = ["entry", "raw_file", "write_raw"]


def entry(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def raw_file(header: dict | bytes, data: bytes = b"", *, declared_len: int | None = None) -> bytes:
    """``u64 len`` + header + data; ``declared_len`` overrides the length prefix."""
    body = (
        header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    )
    n = len(body) if declared_len is None else declared_len
    return struct.pack("<Q", n) + body + data


def write_raw(path: Path, header: dict | bytes, data: bytes = b"", **kw) -> Path:
    path.write_bytes(raw_file(header, data, **kw))
    return path
