"""mlxload.dequantize on this machine's own path, its validation, and kernel source lookup."""

from __future__ import annotations

import re

import mlx.core as mx
import numpy as np
import pytest
from bit_widths import BITS, ORACLE_BITS
from hypothesis import given, settings
from hypothesis import strategies as st

import mlxload.kernel_sources as kernel_sources
from mlxload import dequant
from mlxload.backend import backend, mlx_quantizes_bits
from mlxload.dequant import (
    DequantizeError,
    QuantizedDtypeError,
    QuantizedShapeError,
    UnsupportedQuantizationError,
    dequantize,
)
from mlxload.errors import MlxloadError


def _quantized(shape=(4, 128), dtype=mx.float16, group_size=64, bits=4):
    x = mx.random.normal(shape, key=mx.random.key(1)).astype(dtype)
    return mx.quantize(x, group_size=group_size, bits=bits)


FLOATS = (mx.float16, mx.bfloat16, mx.float32)


def _assert_exact(got, ref):
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert mx.array_equal(got, ref).item(), f"{mx.sum(got != ref).item()} elements differ"


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("bits", BITS)
def test_native_path_matches_mx_dequantize(bits, group_size, dtype):
    # Odd row count, and a 3-D batch; large enough for subnormal and rounding-tie cases.
    for shape in [(37, 4 * group_size), (2, 3, 2 * group_size)]:
        x = mx.random.normal(shape, key=mx.random.key(bits + group_size)).astype(dtype)
        w, s, b = mx.quantize(x, group_size=group_size, bits=bits)
        got = dequantize(w, s, b, group_size=group_size, bits=bits)
        _assert_exact(got, mx.dequantize(w, s, b, group_size=group_size, bits=bits))
        assert dequant.last_path() == dequant.which_path()


@pytest.mark.parametrize("out_dtype", [None, *FLOATS], ids=str)
@pytest.mark.parametrize("biases_dtype", FLOATS, ids=str)
@pytest.mark.parametrize("scales_dtype", FLOATS, ids=str)
def test_native_path_mixed_dtypes(scales_dtype, biases_dtype, out_dtype):
    w, s, b = _quantized((9, 256), scales_dtype, 64, 5)
    b = b.astype(biases_dtype)
    got = dequantize(w, s, b, group_size=64, bits=5, dtype=out_dtype)
    _assert_exact(got, mx.dequantize(w, s, b, group_size=64, bits=5, dtype=out_dtype))


def test_tiny_scales_round_like_mx_dequantize():
    # Products and sums in the float16 subnormal range, and a product that overflows.
    w, s, b = _quantized((4, 128), mx.float16, 64, 8)
    for scale, bias in [(1e-7, 3e-8), (6e-5, -1e-6), (400.0, 0.0)]:
        s2, b2 = mx.full(s.shape, scale, mx.float16), mx.full(b.shape, bias, mx.float16)
        _assert_exact(dequantize(w, s2, b2, 64, 8), mx.dequantize(w, s2, b2, 64, 8))


def test_which_path_follows_the_backend(monkeypatch):
    expected = {"metal": dequant.PATH_METAL, "cuda": dequant.PATH_MLX}.get(
        backend(), dequant.PATH_CPU
    )
    assert dequant.which_path() == expected
    with mx.stream(mx.cpu):
        assert dequant.which_path() == dequant.PATH_CPU
    monkeypatch.setattr(mx.metal, "is_available", lambda: False)
    assert dequant.which_path() in (dequant.PATH_CPU, dequant.PATH_MLX)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_on_cuda_mx_dequantize_itself_gives_the_result(monkeypatch, bits):
    """MLX's CUDA kernel rounds otherwise than the ops path (fused multiply-adds): on an H100
    thousands of values differed. (Simulated here: the backend is said to be CUDA.)"""
    monkeypatch.setattr(dequant, "backend", lambda: "cuda")
    w, s, b = _quantized((8, 256), mx.float16, 64, bits)
    _assert_exact(dequantize(w, s, b, 64, bits), mx.dequantize(w, s, b, 64, bits))
    assert dequant.last_path() == dequant.PATH_MLX


@pytest.mark.skipif(backend() != "cpu", reason="the ops path equals mx.dequantize on the CPU only")
def test_on_cuda_bits_mlx_cannot_dequantize_take_the_ops_path(monkeypatch):
    monkeypatch.setattr(dequant, "backend", lambda: "cuda")
    monkeypatch.setattr(dequant, "mlx_dequantizes_bits", lambda bits: False)
    w, s, b = _quantized((8, 256), mx.float16, 64, 4)
    _assert_exact(dequantize(w, s, b, 64, 4), mx.dequantize(w, s, b, 64, 4))
    assert dequant.last_path() == dequant.PATH_CPU


def test_error_classes_are_mlxload_value_errors():
    for cls in (UnsupportedQuantizationError, QuantizedShapeError, QuantizedDtypeError):
        assert issubclass(cls, DequantizeError)
    assert issubclass(DequantizeError, MlxloadError)
    assert issubclass(DequantizeError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 7}, "unsupported bits=7 for affine quantization; valid: [1, 2, 3, 4, 5, 6, 8]"),
        ({"bits": 0}, "unsupported bits=0 for affine quantization; valid: [1, 2, 3, 4, 5, 6, 8]"),
        ({"bits": True}, "unsupported bits=True"),
        (
            {"group_size": 16},
            "unsupported group_size=16 for affine quantization; valid: [32, 64, 128]",
        ),
        ({"group_size": 256}, "unsupported group_size=256"),
    ],
)
def test_unsupported_parameters(kwargs, message):
    w, s, b = _quantized()
    args = {"group_size": 64, "bits": 4, **kwargs}
    with pytest.raises(UnsupportedQuantizationError, match=re.escape(message)):
        dequantize(w, s, b, **args)


def test_missing_biases():
    w, s, _b = _quantized()
    with pytest.raises(DequantizeError, match=r"affine dequantization needs biases"):
        dequantize(w, s, None)


def _shape_cases():
    w, s, b = _quantized((4, 128), mx.float16, 64, 4)  # w (4, 16), scales (4, 2)
    return [
        (w, s, b[:, :1], "scales shape (4, 2) != biases shape (4, 1)"),
        (w, s[:3], b[:3], "scales/biases shape (3, 2) does not match packed weights shape (4, 16)"),
        (
            w[None],
            s,
            b,
            "scales/biases shape (4, 2) does not match packed weights shape (1, 4, 16)",
        ),
        (
            w[:, :8],
            s,
            b,
            "packed weights (4, 8) hold 64 values per row at bits=4, but scales (4, 2) "
            "with group_size=64 describe 128",
        ),
        (w[0], s[0], b[0], "packed weights need at least 2 dimensions, got shape (16,)"),
    ]


@pytest.mark.parametrize(("w", "s", "b", "message"), _shape_cases())
def test_shape_disagreements(w, s, b, message):
    with pytest.raises(QuantizedShapeError, match=re.escape(message)):
        dequantize(w, s, b, group_size=64, bits=4)


def test_shape_mismatch_from_wrong_bits_is_reported():
    w, s, b = _quantized((4, 128), mx.float16, 64, 4)
    with pytest.raises(
        QuantizedShapeError, match=re.escape("hold 85.3333 values per row at bits=6")
    ):
        dequantize(w, s, b, group_size=64, bits=6)


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("w", "packed weights must be uint32, got int32"),
        ("scales", "scales must be one of float16, bfloat16, float32, got int32"),
        ("biases", "biases must be one of float16, bfloat16, float32, got int32"),
        ("dtype", "output dtype must be one of float16, bfloat16, float32, got int32"),
    ],
)
def test_wrong_dtypes(which, message):
    w, s, b = _quantized()
    args = {"w": w, "scales": s, "biases": b, "dtype": None}
    args[which] = mx.int32 if which == "dtype" else args[which].astype(mx.int32)
    with pytest.raises(QuantizedDtypeError, match=re.escape(message)):
        dequantize(**args)


def test_empty_rows_give_an_empty_result():
    w, s, b = _quantized()
    got = dequantize(w[:0], s[:0], b[:0], 64, 4)
    assert got.shape == (0, 128) and got.dtype == mx.float16
    assert dequant.last_path() == dequant.PATH_EMPTY


def test_kernel_source_is_found_and_cached():
    text = kernel_sources.kernel_source("affine_dequantize")
    assert "thread_position_in_grid" in text and "GROUP_SIZE" in text
    assert kernel_sources.kernel_source("affine_dequantize") is text
    assert (kernel_sources.kernels_dir() / "affine_dequantize.metal").is_file()


def test_missing_kernel_source_names_what_exists():
    with pytest.raises(
        kernel_sources.KernelSourceNotFoundError,
        match=r"no_such_kernel\.metal not found; available kernels: \[.*'affine_dequantize'",
    ):
        kernel_sources.kernel_source("no_such_kernel")
    assert issubclass(kernel_sources.KernelSourceNotFoundError, FileNotFoundError)


def test_kernels_dir_prefers_the_installed_copy(tmp_path, monkeypatch):
    wheel_dir = tmp_path / "kernels"
    wheel_dir.mkdir()
    (wheel_dir / "x.metal").write_text("// body")
    monkeypatch.setattr(kernel_sources, "_candidates", lambda: [wheel_dir, tmp_path / "none"])
    kernel_sources.kernels_dir.cache_clear()
    try:
        assert kernel_sources.kernels_dir() == wheel_dir
        monkeypatch.setattr(kernel_sources, "_candidates", lambda: [tmp_path / "none"])
        kernel_sources.kernels_dir.cache_clear()
        with pytest.raises(kernel_sources.KernelSourceNotFoundError, match="no Metal kernel"):
            kernel_sources.kernels_dir()
    finally:
        kernel_sources.kernels_dir.cache_clear()


@settings(max_examples=40, deadline=None)
@given(
    bits=st.sampled_from(ORACLE_BITS),
    group_size=st.sampled_from([32, 64, 128]),
    rows=st.integers(1, 5),
    groups=st.integers(1, 3),
    dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**31 - 1),
)
def test_native_path_on_arbitrary_words(bits, group_size, rows, groups, dtype, seed):
    # Every bit pattern, not only what mx.quantize writes; scales of both signs.
    rng = np.random.default_rng(seed)
    words = groups * group_size * bits // 32
    w = mx.array(rng.integers(0, 2**32, size=(rows, words), dtype=np.uint32))
    s = mx.array(rng.standard_normal((rows, groups)).astype(np.float32)).astype(dtype)
    b = mx.array(rng.standard_normal((rows, groups)).astype(np.float32)).astype(dtype)
    got = dequantize(w, s, b, group_size=group_size, bits=bits)
    _assert_exact(got, mx.dequantize(w, s, b, group_size=group_size, bits=bits))


@pytest.mark.parametrize(
    ("mode", "bits", "group_size"), [("mxfp4", 4, 32), ("mxfp8", 8, 32), ("nvfp4", 4, 16)]
)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_float_modes_match_mx_dequantize(mode, bits, group_size, dtype):
    """mlxload.dequantize took affine weights only: the README's call failed on mxfp4/nvfp4
    QuantizedWeights with 'affine dequantization needs biases'."""
    x = mx.random.normal((8, 128), key=mx.random.key(2)).astype(dtype)
    w, s, *_ = mx.quantize(x, group_size=group_size, bits=bits, mode=mode)
    ref = mx.dequantize(w, s, None, group_size=group_size, bits=bits, mode=mode, dtype=dtype)
    got = dequantize(w, s, None, group_size=group_size, bits=bits, dtype=dtype, mode=mode)
    _assert_exact(got, ref)
    assert dequant.last_path() == dequant.PATH_MLX


def test_float_mode_errors_are_ours():
    x = mx.random.normal((8, 128), key=mx.random.key(2))
    w, s, *_ = mx.quantize(x, group_size=32, bits=4, mode="mxfp4")
    with pytest.raises(UnsupportedQuantizationError, match=r"unsupported mode='fp3'; valid: "):
        dequantize(w, s, None, group_size=32, bits=4, mode="fp3")
    with pytest.raises(DequantizeError, match=r"mxfp4 weights have no biases; pass biases=None"):
        dequantize(w, s, s, group_size=32, bits=4, mode="mxfp4")
    with pytest.raises(DequantizeError, match=r"^mxfp4 dequantization \(bits=4, group_size=64\)"):
        dequantize(w, s, None, group_size=64, bits=4, mode="mxfp4")
    with pytest.raises(DequantizeError, match=r"for mxfp4, mxfp8 or nvfp4 weights, pass mode="):
        dequantize(w, s, None, group_size=32, bits=4)


@pytest.mark.parametrize(("mode", "bits", "group_size"), [("mxfp4", 4, 32), ("mxfp8", 8, 32),
                                                         ("nvfp4", 4, 16)])  # fmt: skip
def test_float_modes_default_to_their_own_bits_and_group_size(mode, bits, group_size):
    """The affine defaults (64, 4) made dequantize(w, s, None, mode='mxfp4') fail."""
    x = mx.random.normal((4, 128), key=mx.random.key(3))
    w, s, *_ = mx.quantize(x, group_size=group_size, bits=bits, mode=mode)
    ref = mx.dequantize(w, s, None, group_size=group_size, bits=bits, mode=mode)
    _assert_exact(dequantize(w, s, None, mode=mode), ref)
    empty = dequantize(w[:0], s[:0], None, mode=mode)
    assert empty.shape == (0, 128) and empty.dtype == ref.dtype
    with pytest.raises(QuantizedDtypeError, match="output dtype must be one of"):
        dequantize(w, s, None, dtype=mx.int32, mode=mode)
    with pytest.raises(QuantizedDtypeError, match="packed weights must be uint32"):
        dequantize(w.astype(mx.int32), s, None, mode=mode)


@pytest.mark.skipif(backend() != "cpu", reason="compares with mx.dequantize on the CPU")
def test_on_cuda_one_bit_takes_the_ops_path(monkeypatch):
    """MLX 0.32.4's CUDA 1-bit dequantize gave NaN for valid weights (seen on an H100)."""
    if not mlx_quantizes_bits(1):
        pytest.skip("needs MLX's 1-bit quantize for the oracle")
    import mlxload.backend

    for module in (dequant, mlxload.backend):
        monkeypatch.setattr(module, "backend", lambda: "cuda")
    w, s, b = _quantized((8, 256), mx.float16, 64, 1)
    _assert_exact(dequantize(w, s, b, 64, 1), mx.dequantize(w, s, b, 64, 1))
    assert dequant.last_path() == dequant.PATH_CPU
