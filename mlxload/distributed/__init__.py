"""Per-rank loading for MLX distributed: tensor parallel and pipeline parallel.

Each rank of an ``mlx.launch`` job builds the model lazily, lets mlx-lm's own ``shard`` /
``pipeline`` say what it keeps, and reads only those bytes: a block of output rows
(contiguous) or input columns (one range per row) of each split tensor, and only the shards
holding its pipeline stage's layers.

Example:
    >>> import mlx.core as mx                                  # doctest: +SKIP
    >>> group = mx.distributed.init()                          # doctest: +SKIP
    >>> model, tok, config = load_model_sharded(               # doctest: +SKIP
    ...     "path/to/model", tensor_group=group)
    >>> model.load_report.fraction_read                        # doctest: +SKIP
    0.53
"""

from __future__ import annotations

from mlxload.distributed.api import load_model_sharded
from mlxload.distributed.blocks import Block, derive_block, split_ranges
from mlxload.distributed.errors import ShardingError
from mlxload.distributed.report import RankLoadReport

__all__ = [
    "Block",
    "RankLoadReport",
    "ShardingError",
    "derive_block",
    "load_model_sharded",
    "split_ranges",
]
