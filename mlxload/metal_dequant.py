"""Run mlxload's Metal dequantization kernel through ``mx.fast.metal_kernel``.

Each kernel object is built once per process (building one compiles a Metal library) and
reused; template arguments select bits, group size and dtypes per call. ``metal_kernel`` is
looked up on ``mx.fast`` when a kernel is first built, so tests can stand in a double.
Callers validate arguments first (see :mod:`mlxload.dequant`).
"""

from __future__ import annotations

import functools
from typing import Any

import mlx.core as mx

from mlxload.dtypes import add_dtype
from mlxload.kernel_sources import kernel_source

__all__ = [
    "AFFINE_KERNEL",
    "VALUES_PER_THREAD",
    "affine_dequantize_metal",
    "clear_kernel_cache",
    "get_kernel",
    "launch_dims",
]

AFFINE_KERNEL = "affine_dequantize"
# Outputs written by one thread of the affine kernel (see kernels/affine_dequantize.metal).
VALUES_PER_THREAD = 8
MAX_THREADGROUP = 256

_KERNEL_IO: dict[str, tuple[list[str], list[str]]] = {
    AFFINE_KERNEL: (["w", "scales", "biases"], ["out"]),
}


@functools.cache
def get_kernel(name: str) -> Any:
    """The ``mx.fast.metal_kernel`` object for ``name``, built on first use.

    Args:
        name: A kernel in ``kernels/`` (e.g. ``"affine_dequantize"``).

    Returns:
        The callable kernel object.
    """
    input_names, output_names = _KERNEL_IO[name]
    return mx.fast.metal_kernel(
        name=f"mlxload_{name}",
        input_names=input_names,
        output_names=output_names,
        source=kernel_source(name),
        ensure_row_contiguous=True,
        # IEEE arithmetic, like mx.dequantize: no reassociation or fusing of the two steps.
        compile_options={"math_mode": "safe"},
    )


def clear_kernel_cache() -> None:
    """Forget built kernels (for tests that swap ``mx.fast.metal_kernel``)."""
    get_kernel.cache_clear()


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
) -> mx.array:
    """Dequantize with the Metal kernel; arguments must already be validated.

    Args:
        w: Packed uint32 weights, shape ``(..., K * bits / 32)``.
        scales: Per-group scales, shape ``(..., K / group_size)``.
        biases: Per-group biases, same shape as ``scales``.
        group_size: 32, 64 or 128.
        bits: 2, 3, 4, 5, 6 or 8.
        dtype: Output dtype.

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
        ],
        grid=grid,
        threadgroup=threadgroup,
        output_shapes=[(*w.shape[:-1], row_len)],
        output_dtypes=[dtype],
    )
    return out
