"""What :func:`mlxload.load_model` did: backend, read path, compute dtype, bytes and timings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["LoadReport"]


@dataclass
class LoadReport:
    """How a model was loaded.

    Attributes:
        backend: ``"metal"``, ``"cuda"`` or ``"cpu"``.
        zero_copy: ``"yes"`` (every tensor mapped in place), ``"partial"`` or ``"no"``.
        paths: ``{"zero-copy": n, "copy": m}`` tensor counts.
        checkpoint_dtype: The checkpoint's float dtype (``None`` without float tensors).
        compute_dtype: What float parameters were converted to (``None``: left as stored).
        dtype_reason: Why that dtype (``"argument"``, ``"cpu backend"``, ``"checkpoint"``).
        quantized_modules: Modules built as quantized layers.
        bytes_read: Bytes of tensor data read from the checkpoint.
        timings: Seconds per phase: ``resolve``, ``read``, ``build``, ``convert``,
            ``tokenizer``, ``total``.
    """

    backend: str
    zero_copy: str = "no"
    paths: dict[str, int] = field(default_factory=dict)
    checkpoint_dtype: str | None = None
    compute_dtype: str | None = None
    dtype_reason: str = ""
    quantized_modules: int = 0
    bytes_read: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)
