"""Pipeline parallel: which layers a rank keeps (mlx-lm's ``model.model.pipeline``), and so
which checkpoint tensors and shards it needs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from mlxload.distributed.errors import ShardingError
from mlxload.distributed.skeleton import ModelRecipe

__all__ = ["LAYER_PATTERN", "pipeline_range", "tensors_for_layers"]

LAYER_PATTERN = re.compile(r"(?:^|\.)layers\.(\d{1,6})\.")  # bounded: names are untrusted
"""A tensor of decoder layer ``N`` has ``layers.N.`` in its name (as mlx-lm matches them)."""


def pipeline_range(
    recipe: ModelRecipe, group: Any, tensor_names: Iterable[str] | None = None
) -> tuple[int, int, int]:
    """``(start, stop, num_layers)``: the decoder layers ``group.rank()`` runs.

    Computed by mlx-lm's own ``pipeline(group)`` on a throwaway lazy model, so the split is
    always the one the model will use.

    Args:
        recipe: The model's recipe.
        group: The pipeline group.
        tensor_names: The checkpoint's tensor names, when known (see
            :meth:`ModelRecipe.new_model`).

    Raises:
        ShardingError: the architecture has no ``model.pipeline``.
    """
    model = recipe.new_model(tensor_names)
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "pipeline"):
        raise ShardingError(
            f"{recipe.config.get('model_type')!r} models have no model.pipeline(group) in this "
            "mlx-lm; use tensor parallelism (tensor_group=...) instead"
        )
    num_layers = len(inner.layers)
    if group.size() > num_layers:
        raise ShardingError(
            f"the model has {num_layers} layers: it can't be split across {group.size()} "
            "pipeline ranks (each needs a layer at least); use fewer ranks"
        )
    try:
        inner.pipeline(group)
    except (ValueError, AssertionError, ZeroDivisionError) as e:  # mlx-lm's own refusals
        raise ShardingError(
            f"mlx-lm can't split the {num_layers} layers across {group.size()} pipeline ranks: {e}"
        ) from e
    return inner.start_idx, inner.end_idx, num_layers


def tensors_for_layers(names: Iterable[str], start: int, stop: int) -> list[str]:
    """The tensors a pipeline stage keeps: layers ``[start, stop)`` and every tensor outside
    the decoder layers (embeddings, final norm, head: every stage holds those)."""
    out = []
    for name in names:
        m = LAYER_PATTERN.search(name)
        if m is None or start <= int(m.group(1)) < stop:
            out.append(name)
    return out
