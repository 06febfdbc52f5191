"""What :func:`mlxload.load_model` needs before it reads a weight: config, classes, quant config.

Shared by the single-process loader and the per-rank distributed loader, so both build exactly
the model ``mlx_lm.load`` would for the same checkpoint. mlx-lm is imported only when used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.nn as nn

from mlxload.errors import CheckpointError, MlxloadError
from mlxload.quant_config import QuantizationConfig, find_quantization_config

__all__ = [
    "REPACKED_METHODS",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelRecipe",
    "mlx_lm_utils",
    "model_classes",
    "model_recipe",
]


class ModelLoadError(CheckpointError):
    """The checkpoint can't be built into an mlx-lm model (config, architecture, weights)."""


class MissingDependencyError(MlxloadError, ImportError):
    """mlx-lm (needed for model classes and tokenizers) is not installed."""


def mlx_lm_utils() -> Any:
    """``mlx_lm.utils``, or :class:`MissingDependencyError` naming the extra to install."""
    try:
        import mlx_lm.utils
    except ImportError as e:
        raise MissingDependencyError(
            f"load_model needs mlx-lm for model classes and tokenizers ({e}); "
            "install it with: pip install 'mlxload[lm]'"
        ) from None
    return mlx_lm.utils


def model_classes(utils: Any, config: dict[str, Any], root: Path) -> tuple[type, type]:
    if config.get("model_file") is not None:
        raise ModelLoadError(
            f"{root}/config.json: 'model_file' asks to run custom model code, which "
            "load_model never does; use mlx_lm.load(..., trust_remote_code=True) if you trust it"
        )
    if "model_type" not in config:
        raise ModelLoadError(f"{root}/config.json: no 'model_type'; can't pick a model class")
    try:
        return utils._get_classes(config)
    except ValueError as e:
        raise ModelLoadError(f"{root}/config.json: {e}") from None


@dataclass
class ModelRecipe:
    """What it takes to build the model: config, classes and quantization config.

    Attributes:
        root: Checkpoint directory.
        config: ``config.json`` with the caller's overrides applied.
        model_class, args_class: mlx-lm's ``Model`` and ``ModelArgs`` for the ``model_type``.
        qconfig: The checkpoint's quantization config, or ``None``.
    """

    root: Path
    config: dict[str, Any]
    model_class: type
    args_class: type
    qconfig: QuantizationConfig | None

    def new_model(self) -> nn.Module:
        """A fresh, unquantized, lazily initialized model."""
        return self.model_class(self.args_class.from_dict(self.config))


REPACKED_METHODS = ("awq", "gptq")
"""Hugging Face quantization methods whose tensors are repacked into MLX's layout on load."""


def model_recipe(
    root: Path, model_config: dict[str, Any] | None = None, *, repack: bool = True
) -> ModelRecipe:
    """Read ``config.json`` and pick mlx-lm's classes, as :func:`mlxload.load_model` does.

    Args:
        root: Checkpoint directory.
        model_config: Overrides for ``config.json``.
        repack: Accept AWQ/GPTQ checkpoints (their tensors are repacked after reading). The
            per-rank distributed loader reads blocks of MLX-layout tensors and can't.

    Raises:
        MissingDependencyError: mlx-lm is not installed.
        ModelLoadError: no ``config.json``, unknown ``model_type``, custom model code, or a
            quantization method whose tensors mlxload can't put into MLX's layout.
    """
    utils = mlx_lm_utils()
    if not (root / "config.json").is_file():
        raise ModelLoadError(f"{root}: no config.json; load_model needs an mlx-lm style model")
    try:
        config = utils.load_config(root)
    except ValueError as e:  # json.JSONDecodeError
        raise ModelLoadError(f"{root}/config.json: not valid JSON: {e}") from None
    if type(config) is not dict:
        raise ModelLoadError(f"{root}/config.json: must be a JSON object")
    if model_config:
        config.update(model_config)
    model_class, args_class = model_classes(utils, config, root)
    if model_config and {"quantization", "quantization_config"} & model_config.keys():
        # the caller overrides quantization: read it from the merged config, not the file
        qconfig = QuantizationConfig.from_model_config(config, source=f"{root}/config.json")
    else:
        qconfig = find_quantization_config(root)
    method = qconfig.quant_method if qconfig is not None else None
    if method is not None and not (repack and method in REPACKED_METHODS):
        raise ModelLoadError(
            f"{qconfig.source}: quant_method {method!r} checkpoints are not loaded by "
            f"{'load_model' if repack else 'the per-rank loader'} yet; use mlx_lm.load, or "
            "convert with mlx_lm.convert"
        )
    return ModelRecipe(root, config, model_class, args_class, qconfig)
