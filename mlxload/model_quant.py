"""Which modules of an mlx-lm model become quantized layers, and with what bits/group size.

Mirrors the ``class_predicate`` of ``mlx_lm.utils.load_model`` so the module set is the one
``mlx_lm.load`` builds: a module the config marks ``false`` stays float; a module with a
``<path>.scales`` tensor is quantized with the bits and group size its tensor shapes imply
(mlx-lm does the same: a top-level default in the config can be wrong for some modules), and
with a ``<path>.global_scale`` where the layer takes one (nvfp4 MoE experts).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlxload.backend import MLX_FOR_ONE_BIT, dtype_name, mlx_quantizes_bits
from mlxload.model_recipe import REPACKED_METHODS
from mlxload.quant_config import QuantizationConfig
from mlxload.quant_errors import QuantizedCheckpointError, QuantizedWeightError
from mlxload.quantized_weight import QuantizedWeight

__all__ = ["class_predicate", "infer_spec"]

# Floating-point modes allow exactly one (bits, group_size) pair each (as mlx-lm infers them).
_FP_MODES = {(4, 16): "nvfp4", (4, 32): "mxfp4", (8, 32): "mxfp8"}


def infer_spec(
    path: str, module: nn.Module, weights: Mapping[str, mx.array], where: str = "checkpoint"
) -> dict[str, Any]:
    """``{"bits", "group_size", "mode"}`` from a module's float shape and its stored tensors.

    The stored tensors are checked as :class:`~mlxload.quantized_weight.QuantizedWeight`
    checks them, before ``nn.quantize`` sees the numbers: scales with more groups than the
    layer has inputs gave a group size of 0, and MLX divides by it (SIGFPE, the process dies).

    Raises:
        QuantizedCheckpointError: the shapes fit no MLX quantization mode, or a bit width
            the installed MLX can't run as a layer.
        QuantizedWeightError: the tensors disagree with each other or with the layer.
    """
    scales = weights[f"{path}.scales"]
    packed = weights.get(f"{path}.weight")
    if packed is None:
        raise QuantizedCheckpointError(
            f"{where}: tensor {path + '.scales'!r} has no packed weight {path + '.weight'!r}; "
            "the checkpoint is incomplete (a shard or tensor missing?)"
        )
    if packed.dtype != mx.uint32:
        raise QuantizedWeightError(
            f"{where}: tensor {path + '.weight'!r} is {dtype_name(packed.dtype)} "
            f"{tuple(packed.shape)}, not packed uint32 words, yet {path + '.scales'!r} "
            "marks it quantized: the checkpoint is damaged, or holds a float layer beside stray "
            "scales"
        )
    in_dims = module.weight.shape[-1]
    if scales.ndim == 0 or packed.ndim == 0 or scales.shape[-1] == 0:
        raise QuantizedCheckpointError(
            f"{where}: tensor {path}.scales has shape {tuple(scales.shape)} and {path}.weight "
            f"{tuple(packed.shape)}: no per-group layout for a layer of {in_dims} inputs"
        )
    group_size = in_dims // scales.shape[-1]
    bits = packed.shape[-1] * 32 // in_dims
    if packed.shape[-1] * 32 != bits * in_dims or in_dims != group_size * scales.shape[-1]:
        raise QuantizedCheckpointError(
            f"{where}: tensor {path}.weight {tuple(packed.shape)} with scales "
            f"{tuple(scales.shape)} doesn't hold the layer's {in_dims} inputs in whole bits "
            "and whole groups; the file is damaged or belongs to another model"
        )
    # only affine keeps float scales; each other mode allows exactly one (bits, group size)
    mode = "affine" if scales.dtype != mx.uint8 else _FP_MODES.get((bits, group_size))
    if mode is None:
        raise QuantizedCheckpointError(
            f"{where}: tensor {path}.weight: {bits} bits with group size {group_size} and uint8 "
            "scales match no MLX quantization mode (mxfp4, nvfp4, mxfp8)"
        )
    try:
        QuantizedWeight(
            packed, scales, weights.get(f"{path}.biases"),
            bits=bits, group_size=group_size, mode=mode, name=path,
        )  # fmt: skip
    except QuantizedWeightError as e:
        raise QuantizedWeightError(f"{where}: {e}") from None
    if mode == "affine" and not mlx_quantizes_bits(bits):
        raise QuantizedCheckpointError(
            f"{where}: tensor {path}.weight is {bits}-bit; MLX {mx.__version__} has no "
            f"{bits}-bit quantized layers (they came with MLX {MLX_FOR_ONE_BIT}): "
            "pip install -U mlx, or read the weights with load_quantized_weights"
        )
    return {"bits": bits, "group_size": group_size, "mode": mode}


def class_predicate(
    config: QuantizationConfig | None, weights: Mapping[str, mx.array], where: str = "checkpoint"
) -> Callable[[str, nn.Module], bool | dict[str, Any]]:
    """The predicate to pass to ``nn.quantize`` for a checkpoint's weights and config
    (``where`` names the checkpoint in error messages)."""

    # AWQ/GPTQ: the repack already applied the config, "dynamic" rules included, to the
    # checkpoint's names (the model's own paths may differ, e.g. language_model.model...).
    overrides = config is not None and config.quant_method not in REPACKED_METHODS

    def predicate(path: str, module: nn.Module) -> bool | dict[str, Any]:
        if not hasattr(module, "to_quantized"):
            return False
        key = _override_key(config, path) if overrides else None
        if key is not None and config.per_tensor[key] is None:
            return False  # the config marks this module "not quantized"
        if f"{path}.scales" not in weights:
            return False
        spec = infer_spec(path, module, weights, where)
        if key is not None:
            _check_override(config, key, spec, where)
        if f"{path}.global_scale" in weights and _takes_global_scale(module):
            spec["global_scale"] = True  # nvfp4 with a per-tensor scale (MoE switch layers)
        return spec

    return predicate


def _override_key(config: QuantizationConfig, path: str) -> str | None:
    """The config key that names module ``path``: the module path itself (all mlx-lm reads),
    or, in a standalone file's ``per_tensor``, also its ``.weight`` tensor; None if neither."""
    keys = (path,) if config.keyed_by_module else (path, f"{path}.weight")
    return next((k for k in keys if k in config.per_tensor), None)


def _check_override(config: QuantizationConfig, key: str, spec: dict[str, Any], where: str) -> None:
    """A module the config names (under ``key``, from :func:`_override_key`) must be stored
    as the config says (mlx-lm refuses such a checkpoint too); only the default may be wrong
    for some modules, as mlx-lm allows. A leftover key under another prefix is one mlx-lm
    never reads, so it must not refuse a checkpoint mlx-lm loads."""
    wanted = config.per_tensor[key]
    if wanted is None:
        return
    stored = (spec["bits"], spec["group_size"], spec["mode"])
    if (wanted.bits, wanted.group_size, wanted.mode) != stored:
        raise QuantizedCheckpointError(
            f"{where}: the quantization config ({config.source or 'config.json'}) gives "
            f"{key!r} {wanted.bits} bits, group size {wanted.group_size}, {wanted.mode}, but "
            f"its stored tensors are {stored[0]} bits, group size {stored[1]}, {stored[2]} for "
            "the layer's inputs; fix the override in the config (or remove it)"
        )


def _takes_global_scale(module: nn.Module) -> bool:
    return "global_scale" in inspect.signature(module.to_quantized).parameters
