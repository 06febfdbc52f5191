"""What :func:`mlxload.load_model` needs before it reads a weight: config, classes, quant config.

Shared by the single-process loader and the per-rank distributed loader, so both build exactly
the model ``mlx_lm.load`` would for the same checkpoint. mlx-lm is imported only when used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.nn as nn

from mlxload.errors import CheckpointError, MlxloadError
from mlxload.quant_config import QuantizationConfig, find_quantization_config

__all__ = [
    "LAYER_COUNT_KEYS",
    "REPACKED_METHODS",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelRecipe",
    "check_layer_counts",
    "load_tokenizer",
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
    except (AttributeError, ImportError) as e:  # a module that isn't a model ("base")
        raise ModelLoadError(
            f"{root}/config.json: model_type {config['model_type']!r} is not a model mlx-lm "
            f"provides ({type(e).__name__}: {e})"
        ) from None


def _model_args(args_class: type, config: dict[str, Any], root: Path) -> Any:
    """``args_class.from_dict(config)``, or a :class:`ModelLoadError` naming the bad key."""
    try:
        return args_class.from_dict(config)
    except TypeError as e:
        missing = re.findall(r"'(\w+)'", str(e)) if "required" in str(e) else []
        if not missing:
            raise _config_rejected(config, root, e) from None
        keys = ", ".join(repr(k) for k in missing)
        raise ModelLoadError(
            f"{root}/config.json: no {keys}, which mlx-lm's {config['model_type']!r} model "
            "needs; add it to config.json (or pass it in model_config)"
        ) from None
    except (ValueError, KeyError, AttributeError, AssertionError, ArithmeticError) as e:
        raise _config_rejected(config, root, e) from None


def _config_rejected(config: dict[str, Any], root: Path, e: Exception) -> ModelLoadError:
    detail = " ".join(str(e).split()) or type(e).__name__
    return ModelLoadError(
        f"{root}/config.json: mlx-lm's {config['model_type']!r} model can't be built from it "
        f"({type(e).__name__}: {detail}); fix that value in config.json"
    )


@dataclass
class ModelRecipe:
    """What it takes to build the model: config, classes and quantization config.

    Attributes:
        root: Checkpoint directory.
        config: ``config.json`` with the caller's overrides applied.
        model_class, args_class: mlx-lm's ``Model`` and ``ModelArgs`` for the ``model_type``.
        qconfig: The checkpoint's quantization config, or ``None``.
        overridden: Keys of ``config`` the caller's ``model_config`` set.
    """

    root: Path
    config: dict[str, Any]
    model_class: type
    args_class: type
    qconfig: QuantizationConfig | None
    overridden: frozenset[str] = frozenset()

    def new_model(self, tensor_names: Iterable[str] | None = None) -> nn.Module:
        """A fresh, unquantized, lazily initialized model.

        Args:
            tensor_names: The checkpoint's tensor names, when known: a layer count in the
                config far beyond the layers they index is refused before the model is built.

        Raises:
            ModelLoadError: ``config.json`` lacks a key the model needs or has a bad value.
        """
        if tensor_names is not None:
            check_layer_counts(self.config, tensor_names, self.root, self.overridden)
        args = _model_args(self.args_class, self.config, self.root)
        try:
            return self.model_class(args)
        except MemoryError:
            raise
        except Exception as e:  # mlx-lm's model code raises whatever a bad value makes it
            # (None where a number belongs, 0 heads: ZeroDivisionError, a list for a dict...)
            raise _config_rejected(self.config, self.root, e) from None


LAYER_COUNT_KEYS = (
    "num_hidden_layers",
    "num_layers",
    "n_layer",
    "n_layers",
    "num_transformer_layers",  # OpenELM
)
"""Config keys that set how many decoder layers mlx-lm builds (top level or one level down,
e.g. ``text_config``)."""

_LIST_INDEX = re.compile(r"\.(\d{1,6})(?=\.)")  # bounded: a hostile name may hold a huge number


def check_layer_counts(
    config: dict[str, Any],
    tensor_names: Iterable[str],
    root: Path,
    overridden: Collection[str] = (),
) -> None:
    """Refuse a layer count that no layer of the checkpoint backs.

    mlx-lm builds one Python module per layer before any weight is read: at ~0.5 ms a layer,
    ``num_hidden_layers: 10000000`` would run for hours before the "missing parameters" error.
    A real model's layers all appear in its tensor names as ``.N.`` list indices, so a count
    far past the highest index (4x + 64, room for architectures that reuse a block) can only
    be a corrupt or mismatched config.

    Args:
        config: The model's config (``config.json`` with the caller's overrides applied).
        tensor_names: The checkpoint's tensor names.
        root: Checkpoint directory, for messages.
        overridden: Top-level keys the caller's ``model_config`` set, so a message blames
            ``model_config`` rather than ``config.json`` for them.

    Raises:
        ModelLoadError: naming the key, its value and the layers the checkpoint has.
    """
    highest = max((int(i) for n in tensor_names for i in _LIST_INDEX.findall(n)), default=-1)
    indexed = highest + 1
    limit = 4 * indexed + 64
    scopes = [("", config)]
    scopes += [(f"{k}.", v) for k, v in config.items() if isinstance(v, dict)]
    for prefix, scope in scopes:
        for key in LAYER_COUNT_KEYS:
            value = scope.get(key)
            if type(value) is int and value > limit:
                top = prefix[:-1] if prefix else key
                where, fix = (
                    ("model_config", "model_config gives a wrong value")
                    if top in overridden
                    else (
                        f"{root}/config.json",
                        "config.json belongs to another model or is corrupt",
                    )
                )
                raise ModelLoadError(
                    f"{where}: {prefix}{key} is {value}, but no tensor name in the checkpoint "
                    f"has a list index above {highest}, so it holds {indexed} layers at most; "
                    f"{fix}"
                )


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
        ModelLoadError: no ``config.json``, unknown ``model_type``, custom model code, a key
            the model's arguments need, or a quantization method whose tensors mlxload
            can't put into MLX's layout.
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
    _model_args(args_class, config, root)  # a missing key fails here, before any read
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
    return ModelRecipe(
        root, config, model_class, args_class, qconfig, frozenset(model_config or ())
    )


_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Files a tokenizer's vocabulary lives in (as transformers' tokenizer classes name them).
_VOCABULARY = (
    "tokenizer.json",
    "tokenizer.model",
    "tiktoken.model",
    "*.tiktoken",
    "spiece.model",
    "sentencepiece*.model",
    "vocab*",
)


def has_tokenizer_files(root: Path) -> bool:
    """Whether ``root`` holds any file a tokenizer is built from (not whether it loads)."""
    return any(next(root.glob(pattern), None) for pattern in _VOCABULARY)


def no_tokenizer_message(root: Path) -> str:
    """What to say of a model directory without tokenizer files."""
    from mlxload.hub.cache import in_hf_cache

    if in_hf_cache(root):  # a snapshot: the repository itself has none
        return (
            f"{root}: the repository has no tokenizer files (tokenizer.json, tokenizer.model, "
            "vocab.json, ...), which a model needs to run; use mlxload.load for its weights "
            "alone, or a repository that ships its tokenizer"
        )
    return (
        f"{root}: no tokenizer files (tokenizer.json, tokenizer.model, vocab.json, ...); "
        "copy them from the model's repository next to config.json"
    )


def load_tokenizer(
    utils: Any, root: Path, tokenizer_config: dict[str, Any] | None, eos_token_ids: Any
) -> Any:
    """``utils.load_tokenizer`` (mlx-lm's ``TokenizerWrapper``) with failures as one line.

    Raises:
        ModelLoadError: no tokenizer files, a tokenizer file that is not valid JSON, or any
            other failure of transformers' tokenizer loading (its first line is kept).
    """
    try:
        # {} rather than None: mlx-lm 0.28 expands it with ** (later versions accept None).
        return utils.load_tokenizer(root, tokenizer_config or {}, eos_token_ids=eos_token_ids)
    except Exception as e:  # transformers/tokenizers raise many types, even bare Exception
        raise _tokenizer_error(root, e) from e


def _tokenizer_error(root: Path, e: Exception) -> ModelLoadError:
    """Say which tokenizer file is at fault, judged only after transformers failed."""
    for name in _TOKENIZER_JSON:
        try:
            with open(root / name, encoding="utf-8") as f:
                json.load(f)
        except (FileNotFoundError, IsADirectoryError):
            continue
        except (ValueError, OSError) as bad:  # JSONDecodeError or UnicodeDecodeError
            detail = str(bad)  # "Expecting ...: line 1 column 2 (char 1)"
            return ModelLoadError(
                f"{root}/{name}: not valid JSON ({detail}); copy it again from the model's "
                "repository"
            )
    if not has_tokenizer_files(root):
        return ModelLoadError(no_tokenizer_message(root))
    lines = [line for line in str(e).splitlines() if line.strip()]
    first = " ".join(lines[0].split())[:200] if lines else type(e).__name__
    return ModelLoadError(
        f"{root}: the tokenizer failed to load ({type(e).__name__}: {first}); check "
        "tokenizer.json and tokenizer_config.json against the model's repository"
    )
