"""The safetensors dtypes and how each one maps onto MLX.

Every dtype the format defines is known here with its size in bits. Where MLX has a matching
dtype the tensor loads as that dtype, never widened (F64 stays float64). Where MLX has none
(the 8/6/4-bit float formats) the tensor loads as its raw bytes (``uint8``) and the true dtype
stays visible in :class:`~mlxload.header.TensorInfo`; :func:`convert_raw` decodes the 8-bit
ones exactly (``mx.from_fp8`` for F8_E4M3, a 256-entry table for the others).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from mlxload.fp8_tables import FP8_FORMATS, fp8_table

__all__ = ["DTYPES", "DType", "add_dtype", "convert_raw", "dtype_for_mlx", "host_stream"]


@dataclass(frozen=True)
class DType:
    """One safetensors dtype.

    Attributes:
        name: The header spelling, e.g. ``"BF16"``.
        bits: Bits per element (4 and 6 for the sub-byte float formats).
        mlx: The MLX dtype holding it unchanged, or ``None`` when MLX has none.
    """

    name: str
    bits: int
    mlx: mx.Dtype | None

    @property
    def alignment(self) -> int:
        """Byte alignment a zero-copy view needs: the element size, at least 1."""
        return max(1, self.bits // 8)


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("BOOL", 8, mx.bool_),
        DType("U8", 8, mx.uint8),
        DType("I8", 8, mx.int8),
        DType("U16", 16, mx.uint16),
        DType("I16", 16, mx.int16),
        DType("U32", 32, mx.uint32),
        DType("I32", 32, mx.int32),
        DType("U64", 64, mx.uint64),
        DType("I64", 64, mx.int64),
        DType("F16", 16, mx.float16),
        DType("BF16", 16, mx.bfloat16),
        DType("F32", 32, mx.float32),
        DType("F64", 64, mx.float64),
        DType("C64", 64, mx.complex64),
        DType("F8_E4M3", 8, None),
        DType("F8_E5M2", 8, None),
        DType("F8_E8M0", 8, None),
        DType("F8_E4M3FNUZ", 8, None),
        DType("F8_E5M2FNUZ", 8, None),
        DType("F6_E2M3", 6, None),
        DType("F6_E3M2", 6, None),
        DType("F4", 4, None),
    )
}

_BY_MLX = {d.mlx: d for d in DTYPES.values() if d.mlx is not None}


def dtype_for_mlx(dtype: mx.Dtype) -> DType:
    """The safetensors dtype that stores an MLX dtype.

    Raises:
        ValueError: MLX dtype with no safetensors spelling.
    """
    try:
        return _BY_MLX[dtype]
    except KeyError:
        raise ValueError(f"MLX dtype {dtype} has no safetensors equivalent") from None


def convert_raw(raw: mx.array, dtype: str, target: mx.Dtype = mx.bfloat16) -> mx.array:
    """Decode the raw bytes of an 8-bit float dtype MLX can't hold natively.

    Every code of these formats is exact in float32, and in bfloat16 too (F8_E8M0's smallest,
    ``2**-127``, as a subnormal); a float16 ``target`` overflows F8_E8M0's large powers of two.

    Args:
        raw: The ``uint8`` array a tensor of that dtype was loaded as.
        dtype: Its safetensors dtype name (see ``TensorInfo.dtype``): F8_E4M3, F8_E5M2,
            F8_E8M0, F8_E4M3FNUZ or F8_E5M2FNUZ.
        target: Floating dtype to decode into.

    Returns:
        The decoded array, shaped like ``raw``.

    Raises:
        NotImplementedError: a dtype without a decoder here (the 6- and 4-bit formats).
        TypeError: ``raw`` is not ``uint8``, or ``target`` is not a floating dtype.

    Example:
        >>> import mlx.core as mx
        >>> convert_raw(mx.array([0x38, 0xC0], dtype=mx.uint8), "F8_E5M2", mx.float32).tolist()
        [0.5, -2.0]
    """
    if dtype in FP8_FORMATS or dtype == "F8_E4M3":
        if raw.dtype != mx.uint8:  # (a table index past 255 reads outside the table)
            raise TypeError(
                f"convert_raw takes the uint8 bytes of a {dtype} tensor, got {raw.dtype}"
            )
        if not mx.issubdtype(target, mx.floating):
            raise TypeError(f"convert_raw decodes {dtype} into a floating dtype, not {target}")
    if dtype == "F8_E4M3":
        if target == mx.float64:  # (mx.from_fp8 gives garbage for float64: via float32, exact)
            return mx.from_fp8(raw, dtype=mx.float32).astype(mx.float64, stream=mx.cpu)
        return mx.from_fp8(raw, dtype=target)
    if dtype in FP8_FORMATS:
        codes = mx.take(mx.array(fp8_table(dtype)), raw.astype(mx.uint32))
        return codes.astype(target, stream=host_stream(target))
    raise NotImplementedError(
        f"mlxload has no conversion from {dtype}; the tensor is available as raw uint8 bytes"
    )


def host_stream(dtype: mx.Dtype) -> mx.Device | None:
    """Where an op that makes ``dtype`` arrays runs: float64 on the CPU, which is the only
    device MLX makes float64 arrays on (a GPU stream refuses them; ``mx.load`` loads on the
    CPU), anything else on the default stream (None)."""
    return mx.cpu if dtype == mx.float64 else None


def add_dtype(a: mx.Dtype, b: mx.Dtype) -> mx.Dtype:
    """MLX's result type of ``a + b`` for two of float16/bfloat16/float32 (dequantization adds
    scaled values in the scales' dtype to biases, so this decides its last rounding)."""
    return a if a == b else mx.float32  # float16 with bfloat16, or either with float32
