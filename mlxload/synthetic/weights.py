"""Seeded random weights for a synthetic Llama checkpoint, quantized the way mlx-lm does it.

The model is built with mlx-lm's own ``llama.Model`` so tensor names and shapes are exactly
what mlx-lm (and :func:`mlxload.load_model`) expect, then quantized with ``nn.quantize`` using
mlx-lm ``convert``'s rule (every module with ``to_quantized`` whose input size divides by the
group size), with the spec's per-module overrides.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from mlxload.synthetic.spec import SyntheticSpec

__all__ = ["build_weights", "write_shards"]


def _init(name: str, shape: tuple[int, ...], key: mx.array, dtype: mx.Dtype) -> mx.array:
    if name.endswith("norm.weight"):
        return mx.ones(shape, dtype=dtype)
    # Embeddings N(0, 0.02); linears N(0, 1/fan_in): activations keep unit scale through the
    # residual stream, so float16 neither overflows nor collapses to ties.
    std = 0.02 if "embed_tokens" in name else 1.0 / math.sqrt(shape[-1])
    return (mx.random.normal(shape, key=key) * std).astype(dtype)


def build_weights(spec: SyntheticSpec) -> dict[str, mx.array]:
    """All tensors of the checkpoint, lazily computed, in mlx-lm's names and layout."""
    from mlx_lm.models import llama

    mx.random.seed(spec.seed)  # the model's own (discarded) init; keeps construction quiet
    model = llama.Model(llama.ModelArgs.from_dict(spec.model_config()))
    params = tree_flatten(model.parameters())
    keys = mx.random.split(mx.random.key(spec.seed), len(params))
    dtype = getattr(mx, spec.dtype)
    model.update(
        tree_unflatten([(n, _init(n, p.shape, keys[i], dtype)) for i, (n, p) in enumerate(params)])
    )
    quantization = spec.quantization()
    if quantization is not None:

        def predicate(path: str, module: nn.Module) -> bool | dict:
            if path in quantization:
                return quantization[path]
            return (
                hasattr(module, "to_quantized") and module.weight.shape[-1] % spec.group_size == 0
            )

        nn.quantize(model, group_size=spec.group_size, bits=spec.bits, class_predicate=predicate)
    return dict(tree_flatten(model.parameters()))


def write_shards(weights: dict[str, mx.array], directory: Path, shards: int) -> None:
    """Write ``model-0000i-of-0000N.safetensors`` files plus ``model.safetensors.index.json``.

    Tensors are cut into ``shards`` groups of about equal size, in model order. Uses
    ``mx.save_safetensors`` (mlx-lm's ``save_model`` can't write shards under 1 GB).
    """
    names = list(weights)
    total = sum(weights[n].nbytes for n in names)
    shards = max(1, min(shards, len(names)))
    groups: list[list[str]] = [[] for _ in range(shards)]
    done = 0
    for name in names:
        index = min(shards - 1, done * shards // max(total, 1))
        groups[index].append(name)
        done += weights[name].nbytes
    groups = [g for g in groups if g]
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        arrays = {n: weights[n] for n in group}
        mx.eval(arrays)
        mx.save_safetensors(str(directory / file), arrays, metadata={"format": "mlx"})
        weight_map.update(dict.fromkeys(group, file))
        del arrays
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
