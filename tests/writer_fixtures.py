"""Small checkpoints for the writer tests, generated at run time."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
from safetensors.numpy import save_file
from st_bytes import entry, write_raw

from mlxload.header import read_header


def mixed_tensors(seed: int = 0, scale: int = 1) -> dict[str, mx.array]:
    """bf16, f16, f32, u32, i8, i64 tensors with odd sizes, names interleaving across dtypes."""
    rng = np.random.default_rng(seed)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        "model.embed.weight": mx.array(f32(37 * scale, 11)).astype(mx.bfloat16),
        "model.layers.0.attn.q.weight": mx.array(rng.integers(0, 2**32, (13, 3), np.uint32)),
        "model.layers.0.attn.q.scales": mx.array(f32(13, 1)).astype(mx.float16),
        "model.layers.0.norm.weight": mx.array(f32(11)),
        "model.layers.1.attn.q.weight": mx.array(rng.integers(0, 2**32, (7, 5), np.uint32)),
        "model.layers.1.mask": mx.array(rng.integers(-128, 128, (29,), np.int8)),
        "model.layers.1.norm.weight": mx.array(f32(11)),
        "model.pos": mx.array(rng.integers(-(2**40), 2**40, (3,), np.int64)),
        "lm_head.weight": mx.array(f32(5 * scale, 11)).astype(mx.bfloat16),
    }


def write_sharded(
    root: Path, tensors: dict[str, mx.array], n: int, metadata: dict | None = None
) -> Path:
    """Write ``tensors`` round-robin into ``n`` unaligned shards (mx.save_safetensors) + index."""
    root.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    weight_map, total = {}, 0
    for i in range(n):
        shard = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: tensors[k] for k in names[i::n]}
        mx.save_safetensors(str(root / shard), part, metadata=metadata or {"format": "mlx"})
        for k, v in part.items():
            weight_map[k] = shard
            total += v.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=4))
    return root


def write_numpy_file(path: Path, seed: int = 1, metadata: dict | None = None) -> Path:
    """A file written by the reference safetensors writer (numpy dtypes)."""
    rng = np.random.default_rng(seed)
    save_file(
        {
            "a": rng.standard_normal((17, 3)).astype(np.float32),
            "b": rng.integers(0, 255, (31,), np.uint8),
            "c": rng.standard_normal((9,)).astype(np.float16),
            "d": rng.integers(0, 2**31, (5,), np.uint32),
        },
        str(path),
        metadata=metadata,
    )
    return path


def u8_file(path: Path, fill: int, n: int = 4) -> Path:
    """``n`` tensors t0.. of 1000 bytes, tensor i filled with ``fill + i`` (same size for any
    ``fill``), written in place when ``path`` exists (O_TRUNC: same inode)."""
    header = {f"t{i}": entry("U8", [1000], 1000 * i, 1000 * (i + 1)) for i in range(n)}
    return write_raw(path, header, b"".join(bytes([fill + i]) * 1000 for i in range(n)))


def tensor_bytes(path: Path) -> dict[str, bytes]:
    """Each tensor's raw bytes, read through the header offsets."""
    header = read_header(path)
    data = path.read_bytes()
    return {name: data[t.offset : t.offset + t.nbytes] for name, t in header.tensors.items()}


def checkpoint_bytes(paths: list[Path]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for p in paths:
        out.update(tensor_bytes(p))
    return out


# Element sizes written out here, not taken from mlxload's own dtype table (the code under test).
_ELEMENT_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
                  "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4,
                  "U64": 8, "I64": 8, "F64": 8, "C64": 8}  # fmt: skip


def assert_aligned(path: Path) -> None:
    """Data section on a 16 KiB boundary and every tensor at a multiple of its element size."""
    header = read_header(path)
    assert header.data_start % 16384 == 0, (path, header.data_start)
    for t in header.tensors.values():
        assert t.offset % _ELEMENT_BYTES.get(t.dtype, 1) == 0, (path, t)
