"""Affine dequantization from MLX ops, bit-exact with ``mx.dequantize`` and faster on CPU.

``mx.dequantize``'s CPU path expands 3/5/6-bit weights bit by bit (32 values per word) and
does its arithmetic in emulated float16. Here the packed rows are read as bytes, where every
8 values occupy exactly ``bits`` bytes, and the arithmetic runs in float32 with a rounding to
the scales' dtype after the multiply and to the add's dtype after the add. That gives the same
bits as rounding each operation in float16/bfloat16: the float32 product of an 8-bit integer
and a float16/bfloat16 scale is exact, and float32 (24 bits) has more than 2p+2 bits for
p = 11 or 8, so rounding a float32 sum again to float16/bfloat16 never double-rounds.
Callers validate arguments first (see :mod:`mlxload.dequant`).
"""

from __future__ import annotations

import mlx.core as mx

from mlxload.dtypes import add_dtype

__all__ = ["affine_dequantize_cpu", "unpack"]


def unpack(w: mx.array, bits: int) -> mx.array:
    """The quantized integers of MLX-packed ``w``, as uint8 of shape ``(..., K)``.

    Args:
        w: uint32 packed rows, shape ``(..., K * bits / 32)``.
        bits: 1, 2, 3, 4, 5, 6 or 8.

    Returns:
        ``(..., K)`` uint8 array (lazy).
    """
    lead = w.shape[:-1]
    raw = w.view(mx.uint8)  # little-endian: byte order is bit-stream order
    mask = (1 << bits) - 1
    if 8 % bits == 0:  # 1, 2, 4, 8 bits: whole values per byte
        per_byte = 8 // bits
        if per_byte == 1:
            return raw
        parts = [(raw >> (bits * i)) & mask for i in range(per_byte)]
        return mx.stack(parts, axis=-1).reshape(*lead, raw.shape[-1] * per_byte)
    # 3, 5, 6 bits: 8 values per `bits` bytes, some straddling two bytes.
    packs = raw.shape[-1] // bits
    chunks = raw.reshape(*lead, packs, bits)
    values = []
    for j in range(8):
        bit = j * bits
        byte, shift = divmod(bit, 8)
        v = chunks[..., byte] >> shift
        if shift + bits > 8:
            v = v | (chunks[..., byte + 1] << (8 - shift))
        values.append(v & mask)
    return mx.stack(values, axis=-1).reshape(*lead, packs * 8)


def affine_dequantize_cpu(
    w: mx.array,
    scales: mx.array,
    biases: mx.array,
    group_size: int,
    bits: int,
    dtype: mx.Dtype,
) -> mx.array:
    """Dequantize with MLX ops in float32, rounding as ``mx.dequantize`` does.

    Args:
        w: Packed uint32 weights, shape ``(..., K * bits / 32)``.
        scales: Per-group scales, shape ``(..., K / group_size)``.
        biases: Per-group biases, same shape as ``scales``.
        group_size: 32, 64 or 128.
        bits: 1, 2, 3, 4, 5, 6 or 8.
        dtype: Output dtype.

    Returns:
        The ``(..., K)`` dequantized array (lazy).
    """
    q = unpack(w, bits)
    row_len = q.shape[-1]
    q = q.reshape(*q.shape[:-1], row_len // group_size, group_size).astype(mx.float32)
    sum_dtype = add_dtype(scales.dtype, biases.dtype)
    qs = q * scales.astype(mx.float32)[..., None]
    if scales.dtype != mx.float32:
        qs = qs.astype(scales.dtype).astype(mx.float32)
    out = qs + biases.astype(mx.float32)[..., None]
    if sum_dtype != mx.float32:
        out = out.astype(sum_dtype)
    return out.astype(dtype).reshape(*w.shape[:-1], row_len)
