"""mlxload: get model weights from safetensors checkpoints into MLX — fast, exactly, safely.

Names are imported lazily on first use, so ``import mlxload`` stays cheap and never imports
huggingface_hub or mlx-lm unless a feature that needs them is used.

Example:
    >>> import mlxload
    >>> ckpt = mlxload.load("path/to/model")          # doctest: +SKIP
    >>> ckpt["model.embed_tokens.weight"].shape       # doctest: +SKIP
"""

from __future__ import annotations

from mlxload._lazy import lazy_getattr
from mlxload._version import __version__
from mlxload.errors import *  # noqa: F403  (errors are cheap and always wanted)
from mlxload.errors import __all__ as _error_names

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "DTYPES": "mlxload.dtypes",
    "convert_raw": "mlxload.dtypes",
    "FileHeader": "mlxload.header",
    "TensorInfo": "mlxload.header",
    "read_header": "mlxload.header",
    "safe_open": "mlxload.reader",
    "load_file": "mlxload.reader",
    "Checkpoint": "mlxload.checkpoint",
    "load": "mlxload.checkpoint",
    # quantized checkpoints
    "QuantizationConfig": "mlxload.quant_config",
    "QuantSpec": "mlxload.quant_config",
    "find_quantization_config": "mlxload.quant_config",
    "QuantizedWeight": "mlxload.quantized_weight",
    "load_quantized_weights": "mlxload.quantized_load",
    "awq_to_mlx": "mlxload.awq_gptq",
    "gptq_to_mlx": "mlxload.awq_gptq",
    "QuantizationConfigError": "mlxload.quant_errors",
    "QuantConfigJSONError": "mlxload.quant_errors",
    "QuantConfigNotFoundError": "mlxload.quant_errors",
    "QuantConfigTypeError": "mlxload.quant_errors",
    "UnsupportedBitsError": "mlxload.quant_errors",
    "UnsupportedGroupSizeError": "mlxload.quant_errors",
    "UnsupportedQuantMethodError": "mlxload.quant_errors",
    "MissingQuantizationConfigError": "mlxload.quant_errors",
    "QuantizedWeightError": "mlxload.quant_errors",
    "QuantizedCheckpointError": "mlxload.quant_errors",
    "RepackError": "mlxload.quant_errors",
    # models (needs the mlx-lm extra)
    "load_model": "mlxload.model",
    "ModelLoadError": "mlxload.model",
    "MissingDependencyError": "mlxload.model_recipe",
    "LoadReport": "mlxload.load_report",
    "synthetic_checkpoint": "mlxload.synthetic",
    "load_model_sharded": "mlxload.distributed",
    "ShardingError": "mlxload.distributed",
    "RankLoadReport": "mlxload.distributed",
    # Hugging Face Hub
    "download": "mlxload.hub",
    "resolve": "mlxload.hub",
    "HubError": "mlxload.hub.errors",
    "HubSpecError": "mlxload.hub.errors",
    "RepoNotFoundError": "mlxload.hub.errors",
    "RevisionNotFoundError": "mlxload.hub.errors",
    "EntryNotFoundError": "mlxload.hub.errors",
    "AuthError": "mlxload.hub.errors",
    "GatedRepoError": "mlxload.hub.errors",
    "OfflineError": "mlxload.hub.errors",
    "IntegrityError": "mlxload.hub.errors",
    "DownloadError": "mlxload.hub.errors",
    # streaming writers
    "merge": "mlxload.writer",
    "split": "mlxload.writer",
    "align": "mlxload.writer",
    "alignment_report": "mlxload.writer",
    "AlignmentReport": "mlxload.writer",
    "WriteResult": "mlxload.writer",
    "WriterError": "mlxload.writer.errors",
    "OutputExistsError": "mlxload.writer.errors",
    "OutputBusyError": "mlxload.writer.errors",
    "OutputIsSourceError": "mlxload.writer.errors",
    "OutputNameError": "mlxload.writer.errors",
    "OutputNotADirectoryError": "mlxload.writer.errors",
    "InsufficientSpaceError": "mlxload.writer.errors",
    "WriteFailedError": "mlxload.writer.errors",
    "WriterArgumentError": "mlxload.writer.errors",
    "MetadataConflictError": "mlxload.writer.errors",
    "InvalidSizeError": "mlxload.writer.errors",
    "EmptySourceError": "mlxload.writer.errors",
    "SourceNotFoundError": "mlxload.writer.errors",
    "OutputHeaderTooLargeError": "mlxload.writer.errors",
    # dequantization (Metal kernel on Apple silicon, fast exact CPU path elsewhere)
    "dequantize": "mlxload.dequant",
    "DequantizeError": "mlxload.dequant",
    "UnsupportedQuantizationError": "mlxload.dequant",
    "QuantizedShapeError": "mlxload.dequant",
    "QuantizedDtypeError": "mlxload.dequant",
    "KernelSourceNotFoundError": "mlxload.kernel_sources",
    # benchmarks
    "WorkerError": "mlxload.bench.runner",
}

__all__ = ["__version__", *_error_names, *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
