"""Which MLX backend runs here, and the compute dtype mlxload picks for it.

On MLX's CPU backend float16 and bfloat16 arithmetic is emulated: ``mx.quantized_matmul`` with
float16 scales is ~30x slower than with float32 ones (8x2048x2048 at 4 bits on 2 cores: ~2 s
against ~62 ms), so a model whose scales, biases and unquantized weights are float32 produces
tokens far sooner. On GPU backends every tensor keeps the dtype it is stored in, as mlx-lm keeps
it: half precision is native there and halves memory, and a checkpoint's float32 norms stay
float32.

Example:
    >>> backend() in ("metal", "cuda", "cpu")
    True
    >>> resolve_compute_dtype("float32")
    mlx.core.float32
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from functools import cache

import mlx.core as mx

from mlxload.errors import InvalidArgumentError

__all__ = [
    "FLOAT_DTYPES",
    "MLX_FOR_ONE_BIT",
    "backend",
    "convert_floats",
    "dtype_name",
    "dtype_reason",
    "mlx_affine_bits",
    "mlx_dequantizes_bits",
    "mlx_quantizes_bits",
    "parse_dtype",
    "resolve_compute_dtype",
    "stored_float_dtype",
]

FLOAT_DTYPES: dict[str, mx.Dtype] = {
    "float16": mx.float16,
    "bfloat16": mx.bfloat16,
    "float32": mx.float32,
}


def backend() -> str:
    """``"metal"``, ``"cuda"`` or ``"cpu"``: where MLX runs arrays by default here."""
    if mx.default_device().type == mx.DeviceType.cpu:
        return "cpu"
    try:
        if mx.metal.is_available():
            return "metal"
    except Exception:  # pragma: no cover - MLX builds without the metal module
        pass
    return "cuda"


MLX_FOR_ONE_BIT = "0.32.4"
"""The first MLX release whose quantized ops take ``bits=1`` (affine)."""


@cache
def mlx_quantizes_bits(bits: int) -> bool:
    """Whether this MLX's own quantized ops (``mx.quantize``, ``mx.quantized_matmul``,
    ``nn.QuantizedLinear``) take affine ``bits``: 1-bit came with MLX :data:`MLX_FOR_ONE_BIT`.

    mlxload's dequantization handles every width itself; only what MLX computes needs this.
    Asked of MLX once per width (a tiny ``mx.quantize``), not read off its version number.
    """
    try:
        mx.quantize(mx.zeros((1, 32)), group_size=32, bits=bits)
    except ValueError:
        return False
    return True


def mlx_dequantizes_bits(bits: int) -> bool:
    """Whether ``mx.dequantize`` on the default device gives a result to match at ``bits``:
    the widths MLX takes (:func:`mlx_quantizes_bits`), but for 1-bit on CUDA, where MLX
    0.32.4's dequantize gave NaN for valid weights on an H100, and other values from one call
    to the next."""
    return mlx_quantizes_bits(bits) and not (bits == 1 and backend() == "cuda")


def mlx_affine_bits() -> tuple[int, ...]:
    """The affine widths mlxload reads that this MLX's own quantized ops take too."""
    from mlxload.quant_config import AFFINE_BITS

    return tuple(b for b in AFFINE_BITS if mlx_quantizes_bits(b))


def dtype_name(dtype: mx.Dtype | None) -> str | None:
    """``mx.float16`` -> ``"float16"`` (``None`` stays ``None``)."""
    return None if dtype is None else str(dtype).removeprefix("mlx.core.")


def parse_dtype(dtype: str | mx.Dtype | None) -> mx.Dtype | None:
    """Accept ``None``, an ``mx.Dtype`` or a name such as ``"float32"``.

    Raises:
        InvalidArgumentError: an unknown name, or a non-float dtype.
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype not in FLOAT_DTYPES:
            raise InvalidArgumentError(
                f"dtype must be one of {', '.join(FLOAT_DTYPES)} or None, got {dtype!r} (an "
                "unknown compute dtype)"
            )
        return FLOAT_DTYPES[dtype]
    if dtype not in FLOAT_DTYPES.values():
        raise InvalidArgumentError(
            f"dtype must be a float type ({', '.join(FLOAT_DTYPES)}) or None, got "
            f"{dtype_name(dtype)}"
        )
    return dtype


def resolve_compute_dtype(dtype: str | mx.Dtype | None) -> mx.Dtype | None:
    """The dtype floating-point parameters are converted to.

    Args:
        dtype: The caller's choice; ``None`` means "pick for this backend".

    Returns:
        ``dtype`` when given; else float32 on the CPU backend, and ``None`` (each tensor left
        in the dtype it is stored in, as mlx-lm leaves it) on GPUs.

    Raises:
        ValueError: ``dtype`` is not a float dtype.
    """
    chosen = parse_dtype(dtype)
    if chosen is not None:
        return chosen
    return mx.float32 if backend() == "cpu" else None


def stored_float_dtype(weights: Mapping[str, mx.array]) -> mx.Dtype | None:
    """The floating dtype holding most of a checkpoint's float bytes (None if it has none):
    bfloat16 for bfloat16 matrices beside more numerous, smaller float32 norms and biases."""
    nbytes: Counter[mx.Dtype] = Counter()
    for a in weights.values():
        if mx.issubdtype(a.dtype, mx.floating):
            nbytes[a.dtype] += a.nbytes
    return nbytes.most_common(1)[0][0] if nbytes else None


def convert_floats(weights: dict[str, mx.array], dtype: mx.Dtype | None) -> dict[str, mx.array]:
    """Every floating tensor cast to ``dtype`` (lazily); integer tensors untouched, and so are
    nvfp4 ``*.global_scale`` tensors: one float32 number per matrix, part of the quantized
    format rather than a compute parameter (mlx-lm keeps them float32 too)."""
    if dtype is None:
        return weights
    return {k: v.astype(dtype) if _converted(k, v, dtype) else v for k, v in weights.items()}


def _converted(name: str, value: mx.array, dtype: mx.Dtype) -> bool:
    return (
        mx.issubdtype(value.dtype, mx.floating)
        and value.dtype != dtype
        and not name.endswith(".global_scale")
    )


def dtype_reason(requested: object) -> str:
    """Why the compute dtype is what it is: ``argument``, ``cpu backend`` or ``checkpoint``."""
    if requested is not None:
        return "argument"
    return "cpu backend" if backend() == "cpu" else "checkpoint"
