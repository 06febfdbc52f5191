"""Whether a checkpoint's tensors fit an mlx-lm model, and, when they don't, an error that says
which tensor, in which file, and what to check.

``model.load_weights(strict=True)`` (and mlx-lm's ``sanitize``) say only that names or shapes
differ, or fail with a bare ``KeyError``; these checks run first and name the shard, the stale
index, or the config fields to compare.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlxload.model_recipe import ModelLoadError

__all__ = [
    "check_fit",
    "check_raw_bytes",
    "refuse_unknown",
    "sanitize_weights",
    "warn_if_lm_head_ignored",
]

_SHOWN = 5  # names listed in a message before "..."
_PER_EXPERT = re.compile(r"\.experts\.\d+\.\w+\.(scales|biases)$")


def _config_hint(model: object = None) -> str:
    """The question to ask of config.json, naming the architecture it chose when ``model`` is
    given (a config.json of another model is a common cause, and its model_type the first
    thing to compare)."""
    model_type = getattr(model, "model_type", None)
    named = f"model_type {model_type!r}, " if isinstance(model_type, str) else ""
    return (
        f"does config.json describe these weights ({named}num_hidden_layers, hidden_size, "
        "intermediate_size, tie_word_embeddings)?"
    )


_CONFIG_HINT = _config_hint()


def sanitize_weights(
    model: nn.Module, weights: dict[str, mx.array], root: Path
) -> dict[str, mx.array]:
    """The model's ``sanitize`` applied, its bare errors turned into a :class:`ModelLoadError`.

    Raises:
        ModelLoadError: ``sanitize`` failed (a tensor it needs is missing, or shapes it stacks
            differ), naming the model class and what it said.
    """
    if not hasattr(model, "sanitize"):
        return weights
    try:
        return model.sanitize(weights)
    except (KeyError, ValueError, IndexError, TypeError) as e:
        what = f"{type(e).__name__}: {e}" if not isinstance(e, KeyError) else f"no tensor {e}"
        raise ModelLoadError(
            f"{root}: mlx-lm's {type(model).__module__}.sanitize failed on the checkpoint's "
            f"tensors ({what}); the checkpoint is incomplete or isn't this architecture: "
            f"{_CONFIG_HINT}"
        ) from e


def check_fit(
    model: nn.Module,
    weights: Mapping[str, mx.array],
    root: Path,
    files: Mapping[str, Path],
    unindexed: Mapping[str, Path],
    repacked: bool = False,
) -> None:
    """Every parameter has a tensor of its shape, and every tensor a parameter.

    Args:
        model: The model, quantized layers in place.
        weights: Its tensors after ``sanitize``.
        root: The checkpoint, for messages.
        files: Checkpoint tensor name -> shard file (names ``sanitize`` made have none).
        unindexed: Tensors the shards hold that the index doesn't list.
        repacked: The tensors were repacked from AWQ/GPTQ (for a hint on per-expert ones).

    Raises:
        ModelLoadError: naming the missing, unexpected or misshapen tensors and their files.
    """
    params = dict(tree_flatten(model.parameters()))
    missing = sorted(params.keys() - weights.keys())
    if missing:
        stale = [n for n in missing if n in unindexed]
        if stale:
            where = unindexed[stale[0]]
            raise ModelLoadError(
                f"{root}: the model needs {_names(missing)}; {where.name} holds "
                f"{stale[0]!r} but the index doesn't list it: the index is stale (regenerate "
                "it, or remove it so that every shard is read)"
            )
        raise ModelLoadError(
            f"{root}: the checkpoint lacks {len(missing)} tensor(s) the model needs: "
            f"{_names(missing)}; is a shard missing? {_config_hint(model)}"
        )
    extra = sorted(weights.keys() - params.keys())
    if extra and repacked and any(_PER_EXPERT.search(n) for n in extra):
        # the model's sanitize stacks experts' weights, not the scales/biases repacked from
        # AWQ/GPTQ (mlx_lm.load fails the same way)
        raise ModelLoadError(
            f"{root}: {len(extra)} tensor(s) fit no parameter of the model: {_names(extra)}; "
            "AWQ/GPTQ mixture-of-experts checkpoints with per-expert tensors can't be built "
            "into this model: mlxload.load_quantized_weights reads their layers"
        )
    refuse_unknown(extra, root, files, hint=_config_hint(model))
    for name in sorted(weights):
        want, got = params[name].shape, weights[name].shape
        if want != got:
            raise ModelLoadError(
                f"{root}: tensor {_names([name], files)} has shape {tuple(got)} where the model "
                f"has {tuple(want)}; {_config_hint(model)}"
            )


def refuse_unknown(
    extra: list[str],
    root: Path,
    files: Mapping[str, Path] | None = None,
    *,
    hint: str = _CONFIG_HINT,
) -> None:
    """Refuse checkpoint tensors that fit no parameter (after ``sanitize``), as mlx-lm does.

    Raises:
        ModelLoadError: naming them (and their files, where known), with ``hint``.
    """
    if extra:
        raise ModelLoadError(
            f"{root}: {len(extra)} tensor(s) fit no parameter of the model: "
            f"{_names(sorted(extra), files)}; a file of another model or an adapter in the "
            f"folder? {hint}"
        )


def check_raw_bytes(
    model: nn.Module,
    weights: Mapping[str, mx.array],
    raw: Mapping[str, tuple[str, mx.array]],
    root: Path,
) -> None:
    """No float parameter receives the raw bytes of a dtype MLX lacks (F8/F6/F4 tensors load
    as ``uint8``): 1.0 in F8_E4M3 would become 56.0.

    Args:
        raw: Checkpoint name -> (its safetensors dtype, the raw array read), for such tensors.
            A tensor ``sanitize`` decoded (a new array) is fine.

    Raises:
        ModelLoadError: naming the tensor, its dtype and how to convert it.
    """
    params = dict(tree_flatten(model.parameters()))
    for name, (dtype, array) in sorted(raw.items()):
        param = params.get(name)
        if weights.get(name) is array and param is not None and _is_float(param.dtype):
            raise ModelLoadError(
                f"{root}: tensor {name!r} is {dtype}, which MLX has no type for (mlxload reads "
                "it as raw bytes), and the model takes it as a float parameter: its values "
                "would be the byte codes. Convert the checkpoint (mlxload.convert_raw decodes "
                "8-bit floats) "
                "or use a quantization the model understands"
            )


def warn_if_lm_head_ignored(
    config: Mapping[str, Any],
    head: mx.array | None,
    embed: mx.array | None,
    after: Mapping[str, mx.array],
) -> None:
    """Warn when ``tie_word_embeddings`` makes ``sanitize`` drop an ``lm_head`` that differs
    from the embeddings (mlx-lm drops it silently; an identical copy is not worth a word).

    Args:
        config: The model's config.
        head, embed: The checkpoint's ``lm_head.weight`` and ``model.embed_tokens.weight``,
            taken before ``sanitize`` (which may pop them from the dict it is given).
        after: The tensors ``sanitize`` returned.
    """
    if head is None or "lm_head.weight" in after or not config.get("tie_word_embeddings"):
        return
    if embed is not None and head.shape == embed.shape and mx.array_equal(head, embed).item():
        return
    warnings.warn(
        "config.json ties the output layer to the embeddings (tie_word_embeddings), so the "
        "checkpoint's own lm_head.weight, which differs from them, is ignored (as mlx-lm "
        "ignores it); set tie_word_embeddings to false if the model needs it",
        stacklevel=3,
    )


def _names(names: list[str], files: Mapping[str, Path] | None = None) -> str:
    def one(name: str) -> str:
        where = files.get(name) if files is not None else None
        return f"{name!r} (in {where.name})" if where is not None else repr(name)

    shown = ", ".join(one(n) for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _is_float(dtype: mx.Dtype) -> bool:
    return mx.issubdtype(dtype, mx.floating)
