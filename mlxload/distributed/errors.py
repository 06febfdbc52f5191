"""Errors of per-rank (tensor / pipeline parallel) loading."""

from __future__ import annotations

from mlxload.errors import MlxloadError

__all__ = ["ShardingError"]


class ShardingError(MlxloadError, ValueError):
    """A model can't be split across the group as asked (sizes that don't divide, a module
    mlx-lm's ``shard`` changes in a way mlxload can't read by blocks, no ``pipeline``...).

    The message names the module or parameter.
    """
