"""Run mlxload's Metal dequantization kernel through ``mx.fast.metal_kernel``.

Each kernel object is built once per process (building one compiles a Metal library) and
reused; template arguments select bits, group size and dtypes per call. ``metal_kernel`` is
looked up on ``mx.fast`` when a kernel is first built, so tests can stand in a double.
Callers validate arguments first (see :mod:`mlxload.dequant`).

Bit-exactness with ``mx.dequantize`` hangs on one thing this code can't see: whether MLX's own
GPU kernel (``scale * d + bias`` in one expression) is compiled into an fma. So the first call
for each combination of dtypes runs a small probe against ``mx.dequantize`` with both
roundings the kernel offers and keeps the one that matches; if neither does, or the kernel
fails to build or run, :func:`rounding` says so and callers use ``mx.dequantize`` itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np

from mlxload.dtypes import add_dtype
from mlxload.kernel_sources import kernel_header, kernel_source

__all__ = [
    "AFFINE_KERNEL",
    "FUSED",
    "TWO_STEP",
    "VALUES_PER_THREAD",
    "affine_dequantize_metal",
    "clear_kernel_cache",
    "get_kernel",
    "launch_dims",
    "probe_rounding",
    "rounding",
    "rounding_failures",
]

AFFINE_KERNEL = "affine_dequantize"
# Outputs written by one thread of the affine kernel (see kernels/affine_dequantize.metal).
VALUES_PER_THREAD = 8
MAX_THREADGROUP = 256

_KERNEL_IO: dict[str, tuple[list[str], list[str]]] = {
    AFFINE_KERNEL: (["w", "scales", "biases"], ["out"]),
}


_kernels: dict[str, Any] = {}
_roundings: dict[tuple[mx.Dtype, mx.Dtype, mx.Dtype], str | None] = {}
_lock = threading.RLock()  # one build and one probe, however many threads ask at once


def get_kernel(name: str) -> Any:
    """The ``mx.fast.metal_kernel`` object for ``name``, built on first use (once per process,
    also when several threads ask first at the same time).

    Args:
        name: A kernel in ``kernels/`` (e.g. ``"affine_dequantize"``).

    Returns:
        The callable kernel object.
    """
    return _once(_kernels, name, lambda: _build_kernel(name))


def _once(cache: dict, key: Any, make: Callable[[], Any]) -> Any:
    """``cache[key]``, made by ``make()`` the first time, by one thread only."""
    if key not in cache:
        with _lock:
            if key not in cache:
                cache[key] = make()
    return cache[key]


def _build_kernel(name: str) -> Any:
    input_names, output_names = _KERNEL_IO[name]
    return mx.fast.metal_kernel(
        name=f"mlxload_{name}",
        input_names=input_names,
        output_names=output_names,
        source=kernel_source(name),
        header=kernel_header(name),
        ensure_row_contiguous=True,
        # IEEE arithmetic, like mx.dequantize: no reassociation, no fast approximations.
        compile_options={"math_mode": "safe"},
    )


def clear_kernel_cache() -> None:
    """Forget built kernels and probe results (for tests that swap ``mx.fast.metal_kernel``)."""
    with _lock:
        _kernels.clear()
        _roundings.clear()
        _failures.clear()
        _unusable.clear()


TWO_STEP = "two-step"
"""``q * scale`` rounded, then ``+ bias`` rounded (MLX's CPU dequantize)."""
FUSED = "fused"
"""``fma(q, scale, bias)``, rounded once (MLX's GPU kernel if its compiler contracts)."""

_PROBE_BITS, _PROBE_GROUP = 4, 64
_failures: dict[tuple[mx.Dtype, mx.Dtype, mx.Dtype], str] = {}
_unusable: set[tuple[mx.Dtype, mx.Dtype, mx.Dtype]] = set()  # the kernel failed for these
_reference = mx.dequantize  # what the probe must match (tests stand in others)


def rounding(out: mx.Dtype, scales: mx.Dtype, biases: mx.Dtype) -> str | None:
    """The kernel rounding that equals ``mx.dequantize`` here, probed once per dtypes.

    Returns:
        :data:`TWO_STEP` or :data:`FUSED`; None when neither matches or the kernel can't be
        built or run (the reason is in :func:`rounding_failures`).
    """
    return _once(_roundings, (out, scales, biases), lambda: probe_rounding(out, scales, biases))


def kernel_unusable(out: mx.Dtype, scales: mx.Dtype, biases: mx.Dtype) -> bool:
    """Whether the probe for these dtypes found the kernel failing to build or run (rather
    than building and rounding otherwise than ``mx.dequantize``)."""
    return (out, scales, biases) in _unusable


def probe_rounding(out: mx.Dtype, scales: mx.Dtype, biases: mx.Dtype) -> str | None:
    """Run the probe behind :func:`rounding` (uncached).

    The probe is real ``mx.quantize`` output (32 x 1,024 values, 4 bits): with random scales
    the two roundings can agree on every value once the output is narrower than the add (float32
    scales, float16 output), while on quantized weights they still differ on real data.
    """
    key = (out, scales, biases)
    rng = np.random.default_rng(20261122)
    x = mx.array(rng.standard_normal((32, 1024), dtype=np.float32)).astype(scales)
    try:
        w, s, b = mx.quantize(x, group_size=_PROBE_GROUP, bits=_PROBE_BITS)
        s, b = s.astype(scales), b.astype(biases)
        want = _reference(w, s, b, group_size=_PROBE_GROUP, bits=_PROBE_BITS, dtype=out)
        matches = [
            fused
            for fused in (False, True)
            if mx.array_equal(
                affine_dequantize_metal(w, s, b, _PROBE_GROUP, _PROBE_BITS, out, fused=fused),
                want,
            ).item()
        ]
    except Exception as e:  # a kernel that doesn't build or run here: fall back, say why
        _failures[key] = f"the kernel failed to build or run: {type(e).__name__}: {e}"
        _unusable.add(key)
        return None
    if len(matches) == 1:
        _failures.pop(key, None)
        return FUSED if matches[0] else TWO_STEP
    _failures[key] = (
        "neither rounding of the kernel equals mx.dequantize on this device"
        if not matches
        else "the probe could not tell the two roundings apart for these dtypes"
    )
    return None


def rounding_failures() -> dict[tuple[mx.Dtype, mx.Dtype, mx.Dtype], str]:
    """Why :func:`rounding` returned None, per ``(out, scales, biases)`` dtypes probed."""
    return dict(_failures)


def launch_dims(rows: int, row_len: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Grid and threadgroup for ``rows`` rows of ``row_len`` outputs.

    Returns:
        ``(grid, threadgroup)``: x covers a row 8 values per thread, y the rows.
    """
    packs = row_len // VALUES_PER_THREAD
    tx = max(1, min(packs, MAX_THREADGROUP))
    ty = max(1, min(rows, MAX_THREADGROUP // tx))
    return (packs, rows, 1), (tx, ty, 1)


def affine_dequantize_metal(
    w: mx.array,
    scales: mx.array,
    biases: mx.array,
    group_size: int,
    bits: int,
    dtype: mx.Dtype,
    *,
    fused: bool = False,
) -> mx.array:
    """Dequantize with the Metal kernel; arguments must already be validated.

    Args:
        w: Packed uint32 weights, shape ``(..., K * bits / 32)``.
        scales: Per-group scales, shape ``(..., K / group_size)``.
        biases: Per-group biases, same shape as ``scales``.
        group_size: 32, 64 or 128.
        bits: 1, 2, 3, 4, 5, 6 or 8.
        dtype: Output dtype.
        fused: Use the one-rounding arithmetic (see :func:`rounding` for which to use).

    Returns:
        The ``(..., K)`` dequantized array.
    """
    row_len = w.shape[-1] * 32 // bits
    rows = w.size // w.shape[-1]
    grid, threadgroup = launch_dims(rows, row_len)
    kernel = get_kernel(AFFINE_KERNEL)
    (out,) = kernel(
        inputs=[w, scales, biases],
        template=[
            ("T", dtype),
            ("S", scales.dtype),
            ("A", add_dtype(scales.dtype, biases.dtype)),
            ("BITS", bits),
            ("GROUP_SIZE", group_size),
            ("FUSED", fused),
        ],
        grid=grid,
        threadgroup=threadgroup,
        output_shapes=[(*w.shape[:-1], row_len)],
        output_dtypes=[dtype],
    )
    return out
