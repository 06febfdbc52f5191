"""A lazy mlx-lm model skeleton shaped like a checkpoint, built without reading tensor data.

MLX arrays are lazy, so constructing the model class and quantizing it allocates nothing until
evaluated. Quantization is decided from the tensors' shapes alone: each checkpoint tensor is
stood in for by an unevaluated ``mx.zeros`` of its shape and dtype (from the shard headers),
which is all :func:`mlxload.model_quant.class_predicate` and the model's ``sanitize`` look at.

Mirrors what :func:`mlxload.load_model` does before it reads any weight (config overrides,
quantization config, model class), so the skeleton is the model ``load_model`` would build.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from mlxload.checkpoint import Checkpoint
from mlxload.distributed.errors import ShardingError
from mlxload.dtypes import DTYPES
from mlxload.model_fit import sanitize_weights
from mlxload.model_quant import class_predicate
from mlxload.model_recipe import ModelRecipe, model_recipe

__all__ = ["ModelRecipe", "build_skeleton", "model_recipe", "placeholders", "sanitized_sources"]


def placeholders(ckpt: Checkpoint, names: Iterable[str]) -> dict[str, mx.array]:
    """Unevaluated ``mx.zeros`` with each tensor's shape and MLX dtype (headers only)."""
    out = {}
    for name in names:
        info = ckpt.info(name)
        dtype = DTYPES[info.dtype].mlx or mx.uint8
        out[name] = mx.zeros(info.shape, dtype=dtype)
    return out


def sanitized_sources(
    model: nn.Module, stand_ins: dict[str, mx.array], root: Path
) -> dict[str, str]:
    """Model parameter name -> checkpoint tensor name, after the model's ``sanitize``.

    ``sanitize`` may drop or rename tensors; a tensor it computes (stacking experts, fusing
    projections) has no single source to read blocks from.

    Raises:
        ShardingError: ``sanitize`` produced a tensor that isn't one of the checkpoint's.
        ModelLoadError: ``sanitize`` failed on the checkpoint's tensors.
    """
    if not hasattr(model, "sanitize"):
        return {k: k for k in stand_ins}
    by_id = {id(v): k for k, v in stand_ins.items()}
    sanitized = sanitize_weights(model, dict(stand_ins), root)
    out = {}
    for name, value in sanitized.items():
        source = by_id.get(id(value))
        if source is None:
            raise ShardingError(
                f"{type(model).__module__}.sanitize computes {name!r} from other tensors; "
                "per-rank block reads need each parameter stored as one checkpoint tensor "
                "(convert the checkpoint with mlx_lm.convert first)"
            )
        out[name] = source
    return out


def build_skeleton(
    recipe: ModelRecipe,
    stand_ins: dict[str, mx.array],
    sources: dict[str, str],
    model: nn.Module | None = None,
) -> nn.Module:
    """The model with quantized layers where the checkpoint has them; nothing evaluated.

    Args:
        recipe: From :func:`model_recipe`.
        stand_ins: From :func:`placeholders` (checkpoint names).
        sources: From :func:`sanitized_sources` (parameter name -> checkpoint name).
        model: A fresh model from ``recipe.new_model()`` to quantize (default: a new one).

    Returns:
        The (lazily initialized) model, in eval mode.
    """
    model = model if model is not None else recipe.new_model()
    by_param = {param: stand_ins[ckpt] for param, ckpt in sources.items()}
    nn.quantize(model, class_predicate=class_predicate(recipe.qconfig, by_param, str(recipe.root)))
    model.eval()
    return model
