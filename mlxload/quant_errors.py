"""Errors about quantized checkpoints: configs, packed weights, loading, AWQ/GPTQ repacking.

Every class derives from :class:`mlxload.errors.MlxloadError` and :class:`ValueError`, so
``except ValueError`` and ``except mlxload.MlxloadError`` both catch them. Messages name the
file (or tensor), the key and the valid options.
"""

from __future__ import annotations

from mlxload.errors import CheckpointError, MlxloadError, _NotFound

__all__ = [
    "MissingQuantizationConfigError",
    "QuantConfigJSONError",
    "QuantConfigNotFoundError",
    "QuantConfigTypeError",
    "QuantizationConfigError",
    "QuantizedCheckpointError",
    "QuantizedWeightError",
    "RepackError",
    "UnsupportedBitsError",
    "UnsupportedGroupSizeError",
    "UnsupportedQuantMethodError",
]


class QuantizationConfigError(MlxloadError, ValueError):
    """A quantization config is unreadable or names settings MLX can't use."""


class QuantConfigJSONError(QuantizationConfigError):
    """The config text is not valid JSON, or its top level is not an object."""


class QuantConfigNotFoundError(_NotFound, QuantizationConfigError):
    """The config file to read does not exist or is a directory; the message says what to pass
    instead (a ``FileNotFoundError`` too, with ``errno`` and ``filename``)."""


class QuantConfigTypeError(QuantizationConfigError):
    """A config key holds a value of the wrong type (e.g. ``"bits": "4"``)."""


class UnsupportedBitsError(QuantizationConfigError):
    """``bits`` is not one the quantization mode supports."""


class UnsupportedGroupSizeError(QuantizationConfigError):
    """``group_size`` is not one the quantization mode supports."""


class UnsupportedQuantMethodError(QuantizationConfigError):
    """``mode`` or ``quant_method`` (or a format inside it) is not supported."""


class MissingQuantizationConfigError(QuantizationConfigError):
    """A model config has no ``quantization`` / ``quantization_config`` section."""


class QuantizedWeightError(MlxloadError, ValueError):
    """Packed weight, scales and biases disagree with each other or with bits/group size."""


class QuantizedCheckpointError(CheckpointError):
    """A checkpoint's quantized tensors are incomplete or lack a config to read them."""


class RepackError(MlxloadError, ValueError):
    """An AWQ/GPTQ tensor can't be converted to MLX's layout exactly."""
