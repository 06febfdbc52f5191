"""Repack AutoAWQ and GPTQ weights into MLX's affine layout.

Both formats store, per linear layer with ``in`` inputs and ``out`` outputs, integer codes
``q``, per-group zero points ``z`` and scales ``s`` and define ``w[o, i] = (q - z) * s`` with
the group of input ``i`` given by ``i // group_size`` (or GPTQ's ``g_idx[i]``). MLX stores
``w = q * scale + bias`` with ``bias = -z * scale`` and packs along the input axis of an
``(out, in)`` weight, in groups of 32, 64 or 128 consecutive inputs.

AutoAWQ (GEMM, 4 bits): ``qweight`` is ``(in, out / 8)`` int32, eight outputs per word in the
interleaved order ``[0, 2, 4, 6, 1, 3, 5, 7]`` (word slot ``k`` holds output ``8c + order[k]``);
``qzeros`` ``(in / group, out / 8)`` is packed the same way; ``scales`` is ``(in / group, out)``.
Without ``qzeros`` (``zero_point: false``) the zero is ``2 ** (bits - 1)``, as mlx-lm assumes.

GPTQ (AutoGPTQ / GPTQModel, bits 2, 3, 4, 8): ``qweight`` is ``(in * bits / 32, out)`` int32,
each column one little-endian bit stream along the inputs (3-bit values cross words), which is
exactly MLX's per-row stream, so the packed words only need a transpose. ``qzeros``
``(groups, out * bits / 32)`` is a stream along the outputs. In the original format
(``checkpoint_format: "gptq"``, the default) a stored zero is ``z - 1``, so ``z = stored + 1``
(without wrapping); in ``"gptq_v2"`` it is ``z`` itself. ``g_idx`` (``in``,) maps inputs to
groups; with act-order (``desc_act``) it may be permuted.

Groups are converted exactly whenever each run of 32/64/128 consecutive inputs shares one
source group (the usual case, also for ``group_size`` -1 or 256); otherwise, e.g. act-order with
a permuted ``g_idx``, :class:`~mlxload.quant_errors.RepackError` is raised rather than loading
different numbers.

What is exact: the integer codes, their groups and the zero points are carried over unchanged.
The bias ``-z * s`` is computed in float32 and rounded once, to ``dtype``: with ``dtype`` float32
(``load_model``'s default on the CPU) every dequantized value ``q * s + bias`` equals the
definition's ``(q - z) * s`` exactly (codes and zeros have at most 9 bits, float16/bfloat16
scales at most 11, so the products fit float32's 24). In the scales' own float16/bfloat16 the
rounded bias makes a value differ from the once-rounded ``(q - z) * s`` by up to a few ulps of
the largest value in its group (mlx-lm's own AWQ conversion does the same); power-of-two
scales match bit for bit.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from mlxload.quant_errors import RepackError
from mlxload.quantized_weight import QuantizedWeight

__all__ = [
    "AWQ_ORDER",
    "awq_to_mlx",
    "gptq_to_mlx",
    "pack_stream",
    "unpack_stream",
]

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_MLX_GROUPS = (128, 64, 32)


# ---------------------------------------------------------------------- bit streams


def unpack_stream(words: np.ndarray, bits: int) -> np.ndarray:
    """Split each row of uint32 words (one little-endian bit stream) into ``bits``-bit values.

    Args:
        words: ``uint32`` array ``(..., W)``; ``W * 32`` must be a multiple of ``bits``.
        bits: Bits per value (1-8).

    Returns:
        ``uint8`` array ``(..., W * 32 // bits)``; value ``j`` is stream bits
        ``[j*bits, (j+1)*bits)``.
    """
    words = np.ascontiguousarray(words, dtype="<u4")
    if 32 % bits == 0:
        shifts = np.arange(0, 32, bits, dtype=np.uint32)
        vals = (words[..., None] >> shifts) & np.uint32((1 << bits) - 1)
        return vals.reshape(*words.shape[:-1], -1).astype(np.uint8)
    stream = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")
    stream = stream.reshape(*words.shape[:-1], -1, bits)
    weights = (1 << np.arange(bits)).astype(np.uint8)
    return (stream * weights).sum(axis=-1, dtype=np.uint8)


def pack_stream(values: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`unpack_stream`: ``(..., K)`` values -> ``(..., K*bits/32)`` words."""
    values = np.asarray(values, dtype=np.uint32)
    k = values.shape[-1]
    if (k * bits) % 32:
        raise ValueError(f"{k} {bits}-bit values do not fill whole uint32 words")
    if 32 % bits == 0:
        per = 32 // bits
        shifts = np.arange(0, 32, bits, dtype=np.uint32)
        grouped = values.reshape(*values.shape[:-1], k // per, per) << shifts
        return np.bitwise_or.reduce(grouped, axis=-1).astype(np.uint32)
    bitplanes = ((values[..., None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    packed = np.packbits(bitplanes.reshape(*values.shape[:-1], -1), axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u4").astype(np.uint32)


# ---------------------------------------------------------------------- formats


def awq_to_mlx(
    qweight: mx.array | np.ndarray,
    qzeros: mx.array | np.ndarray | None,
    scales: mx.array | np.ndarray,
    *,
    group_size: int,
    bits: int = 4,
    name: str = "",
    dtype: mx.Dtype | None = None,
) -> QuantizedWeight:
    """Convert one AutoAWQ (GEMM) layer to a :class:`QuantizedWeight`.

    Args:
        qweight: ``(in, out / 8)`` int32/uint32.
        qzeros: ``(in / group_size, out / 8)`` int32/uint32, or None for zero ``2**(bits-1)``.
        scales: ``(in / group_size, out)`` float array; its dtype is kept.
        group_size: The AWQ group size (``-1``: one group per row).
        bits: Must be 4 (the only width AutoAWQ defines a packing for).
        name: Module path, for messages.
        dtype: Float dtype of the returned scales and biases (default: the scales' own);
            float32 makes every dequantized value exact (see the module's docs).

    Returns:
        The weight in MLX's layout, shape ``(out, in)``.

    Raises:
        RepackError: other bits, inconsistent shapes, or groups MLX can't express.
    """
    if bits != 4:
        raise RepackError(
            f"{name or 'AWQ weight'}: bits={bits}; AutoAWQ defines its interleaved packing "
            "only for 4 bits"
        )
    qw = _u32(qweight, name, "qweight")
    n_in, packed_out = qw.shape
    n_out = packed_out * 8
    q = _unpack_awq(qw)  # (in, out)
    scales = _scales(scales, n_out, name)
    n_groups = scales.shape[0]
    groups = _default_groups(n_in, group_size, n_groups, name)
    if qzeros is None:
        zeros = np.full((n_groups, n_out), 1 << (bits - 1), dtype=np.uint32)
    else:
        qz = _u32(qzeros, name, "qzeros")
        if qz.shape != (n_groups, packed_out):
            raise RepackError(
                f"{name}: qzeros shape {qz.shape} != expected {(n_groups, packed_out)} "
                f"(scales {tuple(scales.shape)}, qweight {qw.shape})"
            )
        zeros = _unpack_awq(qz)
    packed = pack_stream(np.ascontiguousarray(q.T), bits)
    return _assemble(packed, zeros, scales, groups, bits, name, dtype)


def gptq_to_mlx(
    qweight: mx.array | np.ndarray,
    qzeros: mx.array | np.ndarray | None,
    scales: mx.array | np.ndarray,
    g_idx: mx.array | np.ndarray | None = None,
    *,
    bits: int,
    group_size: int,
    checkpoint_format: str | None = "gptq",
    name: str = "",
    dtype: mx.Dtype | None = None,
) -> QuantizedWeight:
    """Convert one GPTQ layer to a :class:`QuantizedWeight`.

    Args:
        qweight: ``(in * bits / 32, out)`` int32/uint32.
        qzeros: ``(groups, out * bits / 32)`` int32/uint32, or None for zero ``2**(bits-1)``
            (symmetric).
        scales: ``(groups, out)`` float array; its dtype is kept.
        g_idx: ``(in,)`` group of each input; default ``i // group_size``.
        bits: 2, 3, 4 or 8.
        group_size: Source group size (``-1``: one group per row).
        checkpoint_format: ``"gptq"`` (stored zero = z - 1; also for None) or ``"gptq_v2"``.
        name: Module path, for messages.
        dtype: As for :func:`awq_to_mlx`.

    Returns:
        The weight in MLX's layout, shape ``(out, in)``.

    Raises:
        RepackError: unsupported bits/format, inconsistent shapes, or a ``g_idx`` whose groups
            are not runs of consecutive inputs (act-order); nothing inexact is returned.
    """
    if bits not in (2, 3, 4, 8):
        raise RepackError(f"{name or 'GPTQ weight'}: bits={bits}; supported: 2, 3, 4, 8")
    if checkpoint_format not in (None, "gptq", "gptq_v2"):
        raise RepackError(
            f"{name}: checkpoint_format {checkpoint_format!r}; supported: gptq, gptq_v2"
        )
    qw = _u32(qweight, name, "qweight")
    if (qw.shape[0] * 32) % bits:
        raise RepackError(
            f"{name}: qweight has {qw.shape[0]} rows; {bits}-bit GPTQ needs a multiple of "
            f"{bits // np.gcd(bits, 32)}"
        )
    n_in, n_out = qw.shape[0] * 32 // bits, qw.shape[1]
    scales = _scales(scales, n_out, name)
    n_groups = scales.shape[0]
    if g_idx is None:
        groups = _default_groups(n_in, group_size, n_groups, name)
    else:
        groups = np.asarray(g_idx).astype(np.int64).reshape(-1)
        if groups.shape != (n_in,):
            raise RepackError(f"{name}: g_idx has {groups.size} entries; qweight has {n_in} inputs")
    if qzeros is None:
        zeros = np.full((n_groups, n_out), 1 << (bits - 1), dtype=np.uint32)
    else:
        qz = _u32(qzeros, name, "qzeros")
        want = (n_groups, n_out * bits // 32)
        if (n_out * bits) % 32 or qz.shape != want:
            raise RepackError(
                f"{name}: qzeros shape {qz.shape} != expected {want} "
                f"(scales {tuple(scales.shape)}, {bits} bits)"
            )
        zeros = unpack_stream(qz, bits)[:, :n_out].astype(np.uint32)
        if checkpoint_format != "gptq_v2":
            zeros += 1  # original GPTQ stores z - 1; the sum is not wrapped to `bits` bits
    # Both are one little-endian stream per output along the inputs: only the axes swap.
    packed = np.ascontiguousarray(qw.T)
    return _assemble(packed, zeros, scales, groups, bits, name, dtype)


# ---------------------------------------------------------------------- shared steps


def _assemble(
    packed: np.ndarray,
    zeros: np.ndarray,
    scales: mx.array,
    groups: np.ndarray,
    bits: int,
    name: str,
    dtype: mx.Dtype | None,
) -> QuantizedWeight:
    """packed: (out, words) in MLX order; zeros, scales: (groups, out); groups: (in,)."""
    n_groups = scales.shape[0]
    if groups.size and (groups.min() < 0 or groups.max() >= n_groups):
        raise RepackError(
            f"{name}: group indices range over [{groups.min()}, {groups.max()}] but there are "
            f"{n_groups} groups of scales"
        )
    mlx_group, block_groups = _mlx_groups(groups, name)
    idx = mx.array(block_groups.astype(np.int32))
    s = mx.contiguous(mx.take(scales, idx, axis=0).T)  # (out, in / mlx_group)
    z = mx.array(np.ascontiguousarray(zeros[block_groups].T).astype(np.float32))
    dtype = dtype or s.dtype
    b = (-(z * s.astype(mx.float32))).astype(dtype)
    s = s.astype(dtype)
    return QuantizedWeight(
        mx.array(packed.astype(np.uint32)), s, b, bits=bits, group_size=mlx_group, name=name
    )


def _mlx_groups(groups: np.ndarray, name: str) -> tuple[int, np.ndarray]:
    """Largest MLX group size whose aligned runs of inputs each share one source group."""
    n = groups.size
    for g in _MLX_GROUPS:
        if n % g:
            continue
        blocks = groups.reshape(-1, g)
        if (blocks == blocks[:, :1]).all():
            return g, blocks[:, 0]
    if n % 32:
        raise RepackError(f"{name}: {n} inputs is not a multiple of 32, MLX's smallest group")
    breaks = np.nonzero(groups[1:] != groups[:-1])[0] + 1
    bad = int(breaks[breaks % 32 != 0][0])
    raise RepackError(
        f"{name}: g_idx puts input {bad} in group {groups[bad]} but input {bad - 1} in group "
        f"{groups[bad - 1]}; MLX needs each run of 32, 64 or 128 consecutive inputs to share one "
        "group. This is act-order (desc_act) with a permuted g_idx, which MLX's layout can't "
        "represent exactly; re-quantize without desc_act (or with static groups)"
    )


def _default_groups(n_in: int, group_size: int, n_groups: int, name: str) -> np.ndarray:
    """Input ``i`` in group ``i // group_size``; the last group may be partial, as GPTQ's
    quantizer makes it (``g_idx`` says the same when the checkpoint has one)."""
    if group_size == -1:
        group_size = n_in
    if group_size <= 0:
        raise RepackError(f"{name}: group_size {group_size}; it must be positive or -1")
    made = -(-n_in // group_size)
    if made != n_groups:
        raise RepackError(
            f"{name}: scales have {n_groups} groups; {n_in} inputs in groups of {group_size} "
            f"make {made}"
        )
    return np.arange(n_in) // group_size


def _unpack_awq(words: np.ndarray) -> np.ndarray:
    """(rows, cols/8) AWQ words -> (rows, cols) codes in natural column order."""
    slots = unpack_stream(words, 4).reshape(*words.shape, 8)
    out = np.empty_like(slots)
    out[..., list(AWQ_ORDER)] = slots  # slot k holds column 8c + AWQ_ORDER[k]
    return out.reshape(words.shape[0], -1)


def _u32(x: mx.array | np.ndarray, name: str, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype not in (np.int32, np.uint32) or arr.ndim != 2:
        raise RepackError(
            f"{name}: {what} must be a 2-D int32/uint32 array, got {arr.dtype} {arr.shape}"
        )
    return arr.view(np.uint32)


def _scales(scales: mx.array | np.ndarray, n_out: int, name: str) -> mx.array:
    s = scales if isinstance(scales, mx.array) else mx.array(scales)
    if s.ndim != 2 or s.shape[1] != n_out or not mx.issubdtype(s.dtype, mx.floating):
        raise RepackError(
            f"{name}: scales must be a float (groups, {n_out}) array, "
            f"got {s.dtype} {tuple(s.shape)}"
        )
    return s
