"""Collect a checkpoint's quantized tensors into :class:`QuantizedWeight` objects.

MLX-layout checkpoints (mlx-lm, mlx-community) store each quantized module ``m`` as
``m.weight`` (packed uint32), ``m.scales`` and, for affine, ``m.biases`` (nvfp4 experts may
add ``m.global_scale``); bits, group size and mode come from the directory's config.
AutoAWQ/GPTQ checkpoints (``m.qweight``, ``m.qzeros``, ``m.scales``, ``m.g_idx``) are repacked
into that layout (see :mod:`mlxload.awq_gptq`). Tensors that are not quantized stay available
through the checkpoint itself.

Example:
    >>> weights = load_quantized_weights("path/to/mlx-community-model")  # doctest: +SKIP
    >>> weights["model.layers.0.self_attn.q_proj"]                        # doctest: +SKIP
    QuantizedWeight('model.layers.0.self_attn.q_proj', shape=(2048, 2048), ...)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import mlx.core as mx

from mlxload.awq_gptq import awq_to_mlx, gptq_to_mlx
from mlxload.quant_config import QuantizationConfig, find_quantization_config
from mlxload.quant_errors import QuantizedCheckpointError, QuantizedWeightError
from mlxload.quantized_weight import QuantizedWeight
from mlxload.shards import MODEL_SHARDS

__all__ = [
    "TensorSource",
    "load_quantized_weights",
    "repack_to_mlx",
]


class TensorSource(Protocol):
    """What the loader needs from a checkpoint (``mlxload.Checkpoint`` provides it)."""

    root: Path

    def keys(self) -> Iterable[str]: ...

    def __getitem__(self, name: str) -> mx.array: ...

    def info(self, name: str) -> Any: ...


def load_quantized_weights(
    source: str | os.PathLike | TensorSource,
    *,
    config: QuantizationConfig | Mapping[str, Any] | None = None,
) -> dict[str, QuantizedWeight]:
    """Every quantized module of a checkpoint, keyed by module path.

    Args:
        source: A checkpoint directory/file/index (opened with :func:`mlxload.load`; of a
            directory, its ``model*.safetensors`` when it has any, as mlx-lm reads it) or an
            already opened checkpoint.
        config: Use this config instead of the one found next to the checkpoint: a
            :class:`QuantizationConfig`, a parsed ``config.json``, or its ``quantization``
            section as a dict (``{"bits": 4, "group_size": 64}``). Found by default in
            (``config.json`` ``quantization`` / ``quantization_config``, then
            ``quantization_config.json``, ``quantize_config.json``, then ``quant_config.json``).

    Returns:
        ``{module_path: QuantizedWeight}``, e.g. ``"model.layers.0.mlp.down_proj"``; empty for a
        checkpoint without quantized modules (check ``load(path)`` for its float tensors). Bits and
        group size are the config's for each module: without the model, readings that fit the
        same stored shapes (4-bit/64 and 8-bit/32) can't be told apart, so a config lacking a
        module's override gives it the default (``load_model`` reads the model's shapes).

    Raises:
        QuantizedCheckpointError: a ``.scales`` without its packed weight, a packed weight with
            no config to read it, a module the config marks unquantized that has scales, or a
            layout that isn't supported; the message names the tensor.
        QuantizedWeightError: shapes disagree with the config's bits/group size.
        RepackError: an AWQ/GPTQ layer that can't be converted exactly.
        QuantizationConfigError: the config file is malformed.
    """
    config = _as_config(config)
    ckpt = _open(source)
    try:
        root = getattr(ckpt, "root", None)
        if config is None and root is not None:
            config = find_quantization_config(root)
        names = set(ckpt.keys())
        where = str(root) if root is not None else "checkpoint"
        method = config.quant_method if config is not None else None
        if method in ("awq", "gptq"):
            return _load_awq_gptq(ckpt, names, config, where)
        if method is not None:
            _refuse_foreign_layout(names, method, where)
        return _load_mlx(ckpt, names, config, where)
    finally:
        if ckpt is not source:  # we opened it: close the shards (arrays stay valid)
            ckpt.close()


def repack_to_mlx(
    tensors: Mapping[str, mx.array],
    config: QuantizationConfig,
    where: str = "checkpoint",
    *,
    dtype: mx.Dtype | None = None,
) -> dict[str, mx.array]:
    """An AWQ/GPTQ checkpoint's tensors with every quantized layer in MLX's layout.

    ``<module>.qweight/.qzeros/.scales/.g_idx`` become ``<module>.weight/.scales/.biases``
    (what ``nn.QuantizedLinear`` holds); every other tensor is passed through unchanged.
    ``dtype`` is that of the new scales and biases (default: the stored scales'); the biases
    are rounded to it once (see :mod:`mlxload.awq_gptq`).

    Raises:
        QuantizedCheckpointError, RepackError: as :func:`load_quantized_weights`.
    """
    names = set(tensors)
    repacked = _load_awq_gptq(tensors, names, config, where, dtype)
    out = {
        n: a
        for n, a in tensors.items()
        if n.rsplit(".", 1)[0] not in repacked
        or n.rsplit(".", 1)[-1] not in ("qweight", "qzeros", "scales", "g_idx")
    }
    for module, qw in repacked.items():
        out[f"{module}.weight"] = qw.weight
        out[f"{module}.scales"] = qw.scales
        out[f"{module}.biases"] = qw.biases
    return out


_SECTION_KEYS = frozenset({"bits", "group_size", "mode", "quant_method"})
"""Keys that make a dict a quantization section rather than a whole config.json."""


def _as_config(config: object) -> QuantizationConfig | None:
    """``config=`` as given: a config, a parsed config.json, or its quantization section."""
    if config is None or isinstance(config, QuantizationConfig):
        return config
    if isinstance(config, Mapping):
        sections = ("quantization", "quantization_config", "text_config")
        if any(k in config for k in sections) or not config.keys() & _SECTION_KEYS:
            model_config = config  # a config.json (one without a section is refused)
        elif "quant_method" in config:  # Hugging Face's section: AWQ, GPTQ, ...
            model_config = {"quantization_config": config}
        else:  # mlx-lm's section
            model_config = {"quantization": config}
        return QuantizationConfig.from_model_config(model_config, source="the config= argument")
    raise TypeError(
        "config= takes a QuantizationConfig, a parsed config.json or its quantization section "
        f"(a dict), or None; got {type(config).__name__}"
    )


def _open(source: str | os.PathLike | TensorSource) -> TensorSource:
    if isinstance(source, (str, os.PathLike)):
        from mlxload.checkpoint import load  # imported late: the reader is heavier

        # A model directory is read as mlx-lm reads it (and load_model does): model*.safetensors
        # when there are any, so a consolidated.safetensors beside them is no duplicate.
        return load(source, prefer=MODEL_SHARDS)
    return source


def _load_mlx(
    ckpt: TensorSource, names: set[str], config: QuantizationConfig | None, where: str
) -> dict[str, QuantizedWeight]:
    out: dict[str, QuantizedWeight] = {}
    for part_name in sorted(n for n in names if n.endswith((".biases", ".global_scale"))):
        # ".biases" and ".global_scale" are only ever written next to ".scales" (a plain
        # layer has ".bias").
        scales_name = part_name.rsplit(".", 1)[0] + ".scales"
        if scales_name not in names:
            raise QuantizedCheckpointError(
                f"{where}: tensor {part_name!r} has no {scales_name!r}: the quantized module "
                "is incomplete (a shard or tensor is missing)"
            )
    for scales_name in sorted(n for n in names if n.endswith(".scales")):
        module = scales_name.removesuffix(".scales")
        weight_name = f"{module}.weight"
        if weight_name not in names:
            raise QuantizedCheckpointError(
                f"{where}: tensor {scales_name!r} has no packed weight {weight_name!r}"
            )
        if config is None:
            raise QuantizedCheckpointError(
                f"{where}: tensor {weight_name!r} ({ckpt.info(weight_name).dtype}) has "
                f"{scales_name!r}, so it is quantized, but the checkpoint has no quantization "
                "config (config.json 'quantization' / 'quantization_config', or "
                "quantization_config.json); put one beside it, or pass config= (e.g. "
                '{"bits": 4, "group_size": 64})'
            )
        # The weight's own name matches overrides keyed by tensor name and by module path.
        spec = config.for_tensor(weight_name)
        if spec is None:
            raise QuantizedCheckpointError(
                f"{where}: tensor {scales_name!r} exists but {config.source} marks module "
                f"{module!r} as not quantized (false)"
            )
        biases_name = f"{module}.biases"
        biases = ckpt[biases_name] if biases_name in names else None
        global_name = f"{module}.global_scale"
        global_scale = ckpt[global_name] if global_name in names else None
        try:
            out[module] = QuantizedWeight.from_spec(
                spec,
                ckpt[weight_name],
                ckpt[scales_name],
                biases,
                name=module,
                global_scale=global_scale,
            )
        except QuantizedWeightError as e:
            raise QuantizedWeightError(
                f"{where}: {e} (bits={spec.bits}, group_size={spec.group_size}, "
                f"mode={spec.mode} from {config.source}); if these tensors were quantized "
                "otherwise, fix the config (a per-module override may be missing), or pass "
                "config="
            ) from None
    return out


def _load_awq_gptq(
    ckpt: TensorSource,
    names: set[str],
    config: QuantizationConfig,
    where: str,
    dtype: mx.Dtype | None = None,
) -> dict[str, QuantizedWeight]:
    method = config.quant_method
    modules = {n.removesuffix(".qweight") for n in names if n.endswith(".qweight")}
    for suffix in (".qzeros", ".scales", ".g_idx"):
        for n in sorted(names):
            if n.endswith(suffix) and n.removesuffix(suffix) not in modules:
                raise QuantizedCheckpointError(
                    f"{where}: tensor {n!r} has no packed weight "
                    f"{n.removesuffix(suffix) + '.qweight'!r} ({method} checkpoint)"
                )
    out: dict[str, QuantizedWeight] = {}
    for module in sorted(modules):
        scales_name = f"{module}.scales"
        if scales_name not in names:
            raise QuantizedCheckpointError(
                f"{where}: tensor {module}.qweight has no {scales_name!r} ({method} checkpoint)"
            )
        qzeros = ckpt[f"{module}.qzeros"] if f"{module}.qzeros" in names else None
        if qzeros is None and (config.zero_point is True or config.sym is False):
            raise QuantizedCheckpointError(
                f"{where}: tensor {module}.qzeros is missing but {config.source} says the "
                "quantization is asymmetric (zero_point true / sym false)"
            )
        spec = config.for_tensor(module)  # GPTQModel's "dynamic" rules may set it per module
        if spec is None:
            raise QuantizedCheckpointError(
                f"{where}: tensor {module}.qweight exists but a '-:' rule of the 'dynamic' "
                f"section in {config.source} marks module {module!r} as not quantized"
            )
        if method == "awq":
            out[module] = awq_to_mlx(
                ckpt[f"{module}.qweight"],
                qzeros,
                ckpt[scales_name],
                group_size=spec.group_size,
                bits=spec.bits,
                name=module,
                dtype=dtype,
            )
        else:
            g_idx = ckpt[f"{module}.g_idx"] if f"{module}.g_idx" in names else None
            out[module] = gptq_to_mlx(
                ckpt[f"{module}.qweight"],
                qzeros,
                ckpt[scales_name],
                g_idx,
                bits=spec.bits,
                group_size=spec.group_size,
                checkpoint_format=config.checkpoint_format,
                name=module,
                dtype=dtype,
            )
    return out


def _refuse_foreign_layout(names: set[str], method: str | None, where: str) -> None:
    """Hugging Face mxfp4 / compressed-tensors store tensors under names MLX doesn't use."""
    for n in sorted(names):
        if n.endswith(("_blocks", ".weight_packed", ".weight_scale")):
            raise QuantizedCheckpointError(
                f"{where}: tensor {n!r} is in the {method} checkpoint layout, which "
                "load_quantized_weights does not convert; only MLX-layout tensors "
                "(.weight/.scales/.biases) and AWQ/GPTQ (.qweight/.qzeros/.scales) are read"
            )
