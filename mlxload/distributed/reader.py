"""Read a rank's blocks from a :class:`~mlxload.checkpoint.Checkpoint`, counting the bytes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import mlx.core as mx

from mlxload.checkpoint import Checkpoint
from mlxload.distributed.blocks import Block

__all__ = ["block_ranges", "read_block", "read_blocks"]


def _cuts_in_place(ckpt: Checkpoint, block: Block) -> bool:
    """Whether a block is read as its own rows/columns (else as the whole tensor)."""
    return not block.whole and block.axis in (0, len(ckpt.info(block.name).shape) - 1)


def _cuts(block: Block) -> list[tuple[tuple[int, int] | None, tuple[int, int] | None]]:
    """``(rows, cols)`` of each piece of a block cut on its first or last axis."""
    if block.axis == 0:
        return [((a, b), None) for a, b in block.ranges]
    return [(None, (a, b)) for a, b in block.ranges]


def block_ranges(ckpt: Checkpoint, block: Block) -> list[tuple[Path, list[tuple[int, int]]]]:
    """``(shard, [(offset, nbytes), ...])`` for each read :func:`read_blocks` makes of
    ``block``: what must be present before, when shards are fetched range by range."""
    if not _cuts_in_place(ckpt, block):
        return [ckpt.block_ranges(block.name)]
    return [ckpt.block_ranges(block.name, rows, cols) for rows, cols in _cuts(block)]


def read_block(ckpt: Checkpoint, block: Block) -> tuple[mx.array, int]:
    """One block of a tensor as an evaluated array, and the bytes read for it.

    Output rows (axis 0) are one contiguous range of the file; input columns (last axis) are
    one range per row. A cut on a middle axis (3-D expert weights) reads the whole tensor and
    slices it.
    """
    if block.whole:
        arr = ckpt.materialize([block.name])[block.name]
        return arr, ckpt.info(block.name).nbytes
    ndim = len(ckpt.info(block.name).shape)
    if block.axis not in (0, ndim - 1):
        full = ckpt.materialize([block.name])[block.name]
        index = [slice(None)] * ndim
        pieces = []
        for a, b in block.ranges:
            index[block.axis] = slice(a, b)
            pieces.append(full[tuple(index)])
        arr = mx.contiguous(mx.concatenate(pieces, axis=block.axis))
        mx.eval(arr)
        return arr, ckpt.info(block.name).nbytes
    pieces = [ckpt.read_block(block.name, rows, cols) for rows, cols in _cuts(block)]
    nbytes = sum(p.nbytes for p in pieces)
    if len(pieces) == 1:
        return pieces[0], nbytes
    arr = mx.concatenate(pieces, axis=block.axis)
    mx.eval(arr)
    return arr, nbytes


def read_blocks(ckpt: Checkpoint, blocks: Mapping[str, Block]) -> tuple[dict[str, mx.array], int]:
    """Read every parameter's block: whole tensors and row/column cuts batched per shard.

    Args:
        ckpt: The checkpoint (open on the shards that hold these tensors).
        blocks: Parameter name -> block of its checkpoint tensor.

    Returns:
        ``(parameter name -> array in the stored dtype, bytes read)``.
    """
    whole = sorted({b.name for b in blocks.values() if b.whole})
    arrays = ckpt.materialize(whole)
    nbytes = sum(ckpt.info(n).nbytes for n in whole)
    out: dict[str, mx.array] = {}
    requests = []  # one batched read for every row/column cut, whatever the shard
    for param, block in blocks.items():
        if block.whole:
            out[param] = arrays[block.name]
        elif _cuts_in_place(ckpt, block):
            for i, (rows, cols) in enumerate(_cuts(block)):
                requests.append(((param, i), block.name, rows, cols))
        else:
            out[param], n = read_block(ckpt, block)
            nbytes += n
    pieces = ckpt.read_blocks(requests)
    nbytes += sum(p.nbytes for p in pieces.values())
    for param, block in blocks.items():
        if param in out:
            continue
        parts = [pieces[(param, i)] for i in range(len(block.ranges))]
        out[param] = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=block.axis)
    mx.eval([out[p] for p in blocks if not blocks[p].whole and len(blocks[p].ranges) > 1])
    return out, nbytes
