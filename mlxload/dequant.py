"""Affine dequantization of MLX-packed weights, bit-exact with ``mx.dequantize``.

:func:`dequantize` validates its arguments, then runs mlxload's Metal kernel where Metal is
available, ``mx.dequantize`` on CUDA, and on the CPU MLX ops that are faster than
``mx.dequantize`` there and give the same bits. :func:`which_path` says which path a call
would take and :func:`last_path` which one the latest call took.
"""

from __future__ import annotations

import mlx.core as mx

from mlxload.backend import backend, dtype_name, mlx_dequantizes_bits, mlx_quantizes_bits
from mlxload.cpu_dequant import affine_dequantize_cpu
from mlxload.dtypes import add_dtype
from mlxload.errors import MlxloadError
from mlxload.quant_config import AFFINE_BITS, AFFINE_GROUP_SIZES, FP_MODES

__all__ = [
    "FLOAT_DTYPES",
    "PATH_CPU",
    "PATH_EMPTY",
    "PATH_METAL",
    "PATH_MLX",
    "SUPPORTED_BITS",
    "SUPPORTED_GROUP_SIZES",
    "DequantizeError",
    "QuantizedDtypeError",
    "QuantizedShapeError",
    "UnsupportedQuantizationError",
    "dequantize",
    "last_path",
    "which_path",
]

SUPPORTED_BITS = AFFINE_BITS
SUPPORTED_GROUP_SIZES = AFFINE_GROUP_SIZES
FLOAT_DTYPES = (mx.float16, mx.bfloat16, mx.float32)

PATH_METAL = "metal-kernel"
PATH_MLX = "mx.dequantize"  # on CUDA; on Metal when the kernel can't match it bit for bit
PATH_CPU = "cpu-mlx-ops"
PATH_EMPTY = "empty"

_last_path: str | None = None


class DequantizeError(MlxloadError, ValueError):
    """Arguments to :func:`dequantize` that can't describe an affine-quantized tensor."""


class UnsupportedQuantizationError(DequantizeError):
    """``bits`` or ``group_size`` is not one MLX's affine layout defines."""


class QuantizedShapeError(DequantizeError):
    """Packed weights, scales and biases disagree in shape with each other or the parameters."""


class QuantizedDtypeError(DequantizeError):
    """A wrong dtype: packed weights not uint32, or scales, biases or output not a float."""


def _dequantize_float_mode(
    w: mx.array,
    scales: mx.array,
    biases: mx.array | None,
    group_size: int | None,
    bits: int | None,
    dtype: mx.Dtype | None,
    mode: str,
) -> mx.array:
    """The float modes (mxfp4, mxfp8, nvfp4: no biases), through ``mx.dequantize``."""
    if mode not in FP_MODES:
        raise UnsupportedQuantizationError(
            f"unsupported mode={mode!r}; valid: affine, {', '.join(FP_MODES)}"
        )
    default_bits, default_group = FP_MODES[mode]
    group_size = default_group if group_size is None else group_size
    bits = default_bits if bits is None else bits
    if biases is not None:
        raise DequantizeError(f"{mode} weights have no biases; pass biases=None")
    _check_packed(w)
    _check_output(dtype)
    if w.size == 0:
        return _empty(w, bits, dtype or mx.bfloat16)
    try:
        return mx.dequantize(
            w, scales, None, group_size=group_size, bits=bits, mode=mode, dtype=dtype
        )
    except ValueError as e:
        raise DequantizeError(
            f"{mode} dequantization (bits={bits}, group_size={group_size}): {e}"
        ) from None


def _float_names() -> str:
    return ", ".join(dtype_name(d) for d in FLOAT_DTYPES)


def _check_packed(w: mx.array) -> None:
    if w.dtype != mx.uint32:
        raise QuantizedDtypeError(f"packed weights must be uint32, got {dtype_name(w.dtype)}")


def _check_output(dtype: mx.Dtype | None) -> None:
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise QuantizedDtypeError(
            f"output dtype must be one of {_float_names()}, got {dtype_name(dtype)}"
        )


def _empty(w: mx.array, bits: int, dtype: mx.Dtype) -> mx.array:
    """The result for packed weights with no rows: ``mx.dequantize`` can't reshape an empty
    array, and there is nothing to compute anyway."""
    return mx.zeros((*w.shape[:-1], w.shape[-1] * 32 // bits), dtype=dtype)


def _validate(
    w: mx.array,
    scales: mx.array,
    biases: mx.array | None,
    group_size: int,
    bits: int,
    dtype: mx.Dtype | None,
) -> mx.Dtype:
    if type(bits) is not int or bits not in SUPPORTED_BITS:
        raise UnsupportedQuantizationError(
            f"unsupported bits={bits!r} for affine quantization; valid: {list(SUPPORTED_BITS)}"
        )
    if type(group_size) is not int or group_size not in SUPPORTED_GROUP_SIZES:
        raise UnsupportedQuantizationError(
            f"unsupported group_size={group_size!r} for affine quantization; "
            f"valid: {list(SUPPORTED_GROUP_SIZES)}"
        )
    if biases is None:
        raise DequantizeError(
            "affine dequantization needs biases (got biases=None); for mxfp4, mxfp8 or nvfp4 "
            "weights, pass mode= (QuantizedWeight.mode)"
        )
    _check_packed(w)
    for what, arr in (("scales", scales), ("biases", biases)):
        if arr.dtype not in FLOAT_DTYPES:
            raise QuantizedDtypeError(
                f"{what} must be one of {_float_names()}, got {dtype_name(arr.dtype)}"
            )
    _check_output(dtype)
    if w.ndim < 2:
        raise QuantizedShapeError(
            f"packed weights need at least 2 dimensions, got shape {tuple(w.shape)}"
        )
    if scales.shape != biases.shape:
        raise QuantizedShapeError(
            f"scales shape {tuple(scales.shape)} != biases shape {tuple(biases.shape)}"
        )
    if scales.ndim != w.ndim or scales.shape[:-1] != w.shape[:-1]:
        raise QuantizedShapeError(
            f"scales/biases shape {tuple(scales.shape)} does not match packed weights shape "
            f"{tuple(w.shape)} in the leading dimensions"
        )
    row_len = w.shape[-1] * 32 // bits
    if w.shape[-1] * 32 % bits or row_len != scales.shape[-1] * group_size:
        raise QuantizedShapeError(
            f"packed weights {tuple(w.shape)} hold {w.shape[-1] * 32 / bits:g} values per row "
            f"at bits={bits}, but scales {tuple(scales.shape)} with group_size={group_size} "
            f"describe {scales.shape[-1] * group_size}"
        )
    if dtype is not None:
        return dtype
    return add_dtype(scales.dtype, biases.dtype)


def which_path() -> str:
    """The path :func:`dequantize` takes on this machine.

    Returns:
        ``PATH_METAL`` when Metal is available; ``PATH_MLX`` on CUDA; else ``PATH_CPU`` (MLX
        ops that beat ``mx.dequantize`` on CPU; see :mod:`mlxload.cpu_dequant`). On Metal a
        call still takes ``PATH_MLX`` for dtypes whose kernel probe failed, and on CUDA the
        ops path for bits MLX can't dequantize (see :func:`last_path`).
    """
    # The default device, not only whether Metal exists: a Mac told to compute on the CPU
    # (mx.set_default_device(mx.cpu), with mx.stream(mx.cpu)) can't run a Metal kernel.
    # On CUDA the ops path rounds otherwise than MLX's kernel (fused multiply-adds): 4-11k of
    # 65k values differed on an H100, so mx.dequantize itself is the exact answer there.
    return {"metal": PATH_METAL, "cuda": PATH_MLX}.get(backend(), PATH_CPU)


def _metal_rounding(
    bits: int, out: mx.Dtype, scales: mx.Dtype, biases: mx.Dtype
) -> tuple[str, str | None]:
    """``(path, kernel rounding)`` on Metal: the kernel with the rounding its probe found; else
    ``mx.dequantize`` (the kernel can't be exact here); and for bits MLX can't dequantize
    (no result to match), the kernel rounding as MLX's CPU does, or the ops path when the
    kernel doesn't build."""
    from mlxload import metal_dequant

    mode = metal_dequant.rounding(out, scales, biases)
    if mode is not None:
        return PATH_METAL, mode
    if mlx_quantizes_bits(bits):
        return PATH_MLX, None
    if metal_dequant.kernel_unusable(out, scales, biases):
        return PATH_CPU, None
    return PATH_METAL, metal_dequant.TWO_STEP


def last_path() -> str | None:
    """The path the latest :func:`dequantize` call took (``None`` before the first call)."""
    return _last_path


def dequantize(
    w: mx.array,
    scales: mx.array,
    biases: mx.array | None,
    group_size: int | None = None,
    bits: int | None = None,
    dtype: mx.Dtype | None = None,
    *,
    mode: str = "affine",
) -> mx.array:
    """Dequantize MLX-quantized weights, bit-exact with ``mx.dequantize``.

    Affine weights go through mlxload's own kernels; the float modes (``mxfp4``, ``mxfp8``,
    ``nvfp4``) through ``mx.dequantize``, so one call serves every ``QuantizedWeight``.

    Args:
        w: Packed uint32 weights, shape ``(..., K * bits / 32)``, at least 2-D.
        scales: Per-group scales (float16, bfloat16 or float32), shape ``(..., K / group_size)``.
        biases: Per-group biases, same shape as ``scales`` (None for the float modes).
        group_size: 32, 64 or 128 (default 64); the float modes' own by default (mxfp4 and
            mxfp8: 32, nvfp4: 16).
        bits: 1, 2, 3, 4, 5, 6 or 8 (default 4; 1-bit needs no particular MLX version here);
            the float modes' own by default (mxfp8: 8, else 4).
        dtype: Output dtype; ``None`` means the result type of scales and biases (for the
            float modes, ``mx.dequantize``'s default, bfloat16).
        mode: ``"affine"`` (default), ``"mxfp4"``, ``"mxfp8"`` or ``"nvfp4"``.

    Returns:
        The dequantized ``(..., K)`` array (lazy, like any MLX op).

    Raises:
        UnsupportedQuantizationError: ``bits`` or ``group_size`` not supported.
        QuantizedShapeError: Shapes disagree with each other or with bits/group size.
        QuantizedDtypeError: A wrong dtype for weights, scales, biases or output.
        DequantizeError: ``biases`` is None.
    """
    global _last_path
    if mode != "affine":
        out = _dequantize_float_mode(w, scales, biases, group_size, bits, dtype, mode)
        _last_path = PATH_MLX if w.size else PATH_EMPTY
        return out
    group_size = 64 if group_size is None else group_size
    bits = 4 if bits is None else bits
    out_dtype = _validate(w, scales, biases, group_size, bits, dtype)
    path = which_path() if w.size > 0 else PATH_EMPTY
    mode = None
    if path == PATH_METAL:
        path, mode = _metal_rounding(bits, out_dtype, scales.dtype, biases.dtype)
    elif path == PATH_MLX and not mlx_dequantizes_bits(bits):
        path = PATH_CPU  # (no MLX result to match)
    if path == PATH_EMPTY:
        out = _empty(w, bits, out_dtype)
    elif path == PATH_METAL:
        from mlxload import metal_dequant

        out = metal_dequant.affine_dequantize_metal(
            w, scales, biases, group_size, bits, out_dtype, fused=mode == metal_dequant.FUSED
        )
    elif path == PATH_MLX:
        out = mx.dequantize(w, scales, biases, group_size=group_size, bits=bits, dtype=out_dtype)
    else:
        out = affine_dequantize_cpu(w, scales, biases, group_size, bits, out_dtype)
    _last_path = path
    return out
