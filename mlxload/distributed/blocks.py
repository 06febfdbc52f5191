"""Which block of each checkpoint tensor one rank keeps after mlx-lm's ``model.shard(group)``.

``mlx.nn.layers.distributed._shard`` cuts a parameter along one axis: first into ``segments``
parts (1 for plain layers, 3 for a fused QKV, or split points), then each part into ``N`` equal
pieces, and rank ``r`` keeps piece ``r`` of every part, concatenated. "all-to-sharded" cuts
weights on their output rows (axis ``max(ndim - 2, 0)``) and biases on their last axis;
"sharded-to-all" cuts weights on the input columns (last axis) and leaves biases whole. For a
quantized layer the packed ``uint32`` words, the scales and the biases are cut the same way, so
an input-column cut falls on quantization group boundaries exactly when the number of groups
divides by ``N``.

:func:`derive_block` turns (full shape, sharded shape, rule) into a :class:`Block`: the axis and
the ``[start, stop)`` ranges of the checkpoint tensor to read.

Example:
    >>> derive_block("w", (8, 4), (4, 4), ranks=2, rank=1, rule=(0, 1))
    Block(name='w', axis=0, ranges=((4, 8),))
    >>> split_ranges(12, ranks=2, rank=0, segments=3)
    ((0, 2), (4, 6), (8, 10))
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from mlxload.distributed.errors import ShardingError

__all__ = ["Block", "derive_block", "split_ranges"]

Segments = int | Sequence[int] | Sequence[float]


@dataclass(frozen=True)
class Block:
    """The part of one checkpoint tensor a rank reads.

    Attributes:
        name: Checkpoint tensor name.
        axis: Axis cut (non-negative), or ``None`` for the whole tensor.
        ranges: ``(start, stop)`` pieces along ``axis``, concatenated in order (one piece
            unless the layer is fused from several segments).
    """

    name: str
    axis: int | None = None
    ranges: tuple[tuple[int, int], ...] = ()

    @property
    def whole(self) -> bool:
        """True when the rank needs the entire tensor."""
        return self.axis is None

    def shape(self, full: Sequence[int]) -> tuple[int, ...]:
        """The shape of the block of a tensor whose full shape is ``full``."""
        if self.axis is None:
            return tuple(full)
        out = list(full)
        out[self.axis] = sum(b - a for a, b in self.ranges)
        return tuple(out)


def _segment_bounds(size: int, segments: Segments) -> list[tuple[int, int]]:
    # Same as mlx.nn.layers.distributed._split: an int is a count of equal parts; a list of
    # ints are split indices; a list of floats are fractions of the axis.
    if isinstance(segments, int):
        if segments <= 0 or size % segments:
            raise ValueError(f"an axis of {size} can't be cut into {segments} equal segments")
        step = size // segments
        return [(i * step, (i + 1) * step) for i in range(segments)]
    points = [int(s * size) if isinstance(s, float) else int(s) for s in segments]
    edges = [0, *points, size]
    return list(itertools.pairwise(edges))


def split_ranges(
    size: int, *, ranks: int, rank: int, segments: Segments = 1
) -> tuple[tuple[int, int], ...]:
    """The ``[start, stop)`` pieces of an axis of ``size`` that ``rank`` keeps.

    Raises:
        ValueError: a segment's length doesn't divide by ``ranks``.
    """
    out = []
    for lo, hi in _segment_bounds(size, segments):
        if (hi - lo) % ranks:
            raise ValueError(
                f"a segment of {hi - lo} (of an axis of {size}) doesn't divide into {ranks} ranks"
            )
        step = (hi - lo) // ranks
        out.append((lo + rank * step, lo + (rank + 1) * step))
    return tuple(out)


def _changed_axis(name: str, full: tuple[int, ...], part: tuple[int, ...], ranks: int) -> int:
    if len(full) != len(part):
        raise ShardingError(f"{name}: sharding changed the rank of {full} to {part}")
    changed = [i for i, (a, b) in enumerate(zip(full, part, strict=True)) if a != b]
    if len(changed) != 1 or full[changed[0]] != part[changed[0]] * ranks:
        raise ShardingError(
            f"{name}: sharded shape {part} is not the full shape {full} cut into {ranks} "
            "along one axis; mlxload can't tell which block this rank keeps"
        )
    return changed[0]


def derive_block(
    name: str,
    full: Sequence[int],
    part: Sequence[int],
    *,
    ranks: int,
    rank: int,
    rule: int | tuple[int, Segments] | None = None,
    module: str | None = None,
) -> Block:
    """The block of checkpoint tensor ``name`` that ``rank`` keeps.

    Args:
        name: Checkpoint tensor name.
        full: Its shape before sharding.
        part: The shape mlx-lm's ``shard`` gave this rank.
        ranks, rank: Group size and this rank.
        rule: What the sharding predicate returned (``axis`` or ``(axis, segments)``), when
            known; ``None`` infers the axis from the shapes with one segment.
        module: The module path, for error messages.

    Returns:
        A :class:`Block` (``axis=None`` when the shapes are equal and no cut was made).

    Raises:
        ShardingError: the shapes don't agree with the rule, or the axis doesn't divide.
    """
    full, part = tuple(full), tuple(part)
    where = f"{module} ({name})" if module else name
    if rule is None and full == part:
        return Block(name)
    if isinstance(rule, tuple):
        axis, segments = rule
    elif isinstance(rule, int):
        axis, segments = rule, 1
    else:
        axis, segments = _changed_axis(where, full, part, ranks), 1
    axis = axis % len(full) if full else 0
    if not full:
        raise ShardingError(f"{where}: a scalar can't be sharded")
    try:
        ranges = split_ranges(full[axis], ranks=ranks, rank=rank, segments=segments)
    except ValueError as e:
        raise ShardingError(
            f"{where}: axis {axis} of shape {full} can't be split across {ranks} ranks: {e}"
        ) from None
    block = Block(name, axis, ranges)
    if block.shape(full) != part:
        raise ShardingError(
            f"{where}: mlx-lm's shard gave shape {part}, but cutting {full} on axis {axis} "
            f"into {ranks} gives {block.shape(full)}"
        )
    return block
