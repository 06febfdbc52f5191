"""The dequantization kernel on a real Apple GPU (skipped where Metal is unavailable)."""

from __future__ import annotations

import itertools

import mlx.core as mx
import pytest
from bit_widths import ORACLE_BITS

from mlxload import dequant, metal_dequant
from mlxload.metal_dequant import clear_kernel_cache

pytestmark = [
    pytest.mark.metal,
    pytest.mark.skipif(not mx.metal.is_available(), reason="needs a Metal GPU"),
]

FLOATS = (mx.float16, mx.bfloat16, mx.float32)
MATRIX = list(itertools.product(ORACLE_BITS, (32, 64, 128), FLOATS))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_probe_finds_the_rounding_mlx_uses_on_this_gpu(dtype):
    """Which of the kernel's roundings this GPU's mx.dequantize matches (printed with -s)."""
    clear_kernel_cache()
    mode = metal_dequant.rounding(dtype, dtype, dtype)
    print(f"{dtype}: {mode}")
    assert mode in (metal_dequant.TWO_STEP, metal_dequant.FUSED), metal_dequant.rounding_failures()


@pytest.mark.parametrize(("bits", "group_size", "dtype"), MATRIX, ids=str)
def test_kernel_matches_mx_dequantize_on_gpu(bits, group_size, dtype):
    for shape in [(33, 4 * group_size), (2, 5, 2 * group_size)]:
        x = mx.random.normal(shape, key=mx.random.key(bits * group_size)).astype(dtype)
        w, s, b = mx.quantize(x, group_size=group_size, bits=bits)
        got = dequant.dequantize(w, s, b, group_size=group_size, bits=bits)
        ref = mx.dequantize(w, s, b, group_size=group_size, bits=bits)
        assert dequant.last_path() == dequant.PATH_METAL
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert mx.array_equal(got, ref).item(), f"{mx.sum(got != ref).item()} elements differ"


@pytest.mark.parametrize("out_dtype", FLOATS, ids=str)
@pytest.mark.parametrize("scales_dtype", FLOATS, ids=str)
def test_output_dtype_differs_from_scales_on_gpu(scales_dtype, out_dtype):
    x = mx.random.normal((17, 256), key=mx.random.key(5)).astype(scales_dtype)
    w, s, b = mx.quantize(x, group_size=64, bits=4)
    got = dequant.dequantize(w, s, b, 64, 4, dtype=out_dtype)
    ref = mx.dequantize(w, s, b, group_size=64, bits=4, dtype=out_dtype)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert mx.array_equal(got, ref).item()
    assert dequant.last_path() == dequant.PATH_METAL  # the kernel ran (no fallback to MLX)


def test_large_matrix_on_gpu():
    clear_kernel_cache()
    x = mx.random.normal((4096, 4096), key=mx.random.key(9)).astype(mx.float16)
    w, s, b = mx.quantize(x, group_size=64, bits=3)
    got = dequant.dequantize(w, s, b, 64, 3)
    assert mx.array_equal(got, mx.dequantize(w, s, b, group_size=64, bits=3)).item()
    assert dequant.last_path() == dequant.PATH_METAL  # the kernel ran (no fallback to MLX)
