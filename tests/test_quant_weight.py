"""QuantizedWeight: validation messages, dequantize/matmul against MLX's own ops, to_module."""

from __future__ import annotations

import math
import re

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from bit_widths import BITS, ONE_BIT

from mlxload.errors import MlxloadError
from mlxload.quant_config import QuantSpec
from mlxload.quant_errors import QuantizedWeightError
from mlxload.quantized_weight import QuantizedWeight

FP_MODES = {"mxfp4": (4, 32), "nvfp4": (4, 16), "mxfp8": (8, 32)}


def quantized(shape, bits, group_size, dtype=mx.float32, mode="affine", seed=0):
    w = mx.random.normal(shape, key=mx.random.key(seed)).astype(dtype)
    return mx.quantize(w, group_size=group_size, bits=bits, mode=mode)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16, mx.float32])
def test_dequantize_is_bit_exact_with_mx_dequantize(bits, group_size, dtype):
    w, s, b = quantized((7, 256), bits, group_size, dtype)  # odd row count
    qw = QuantizedWeight(w, s, b, bits=bits, group_size=group_size, name="proj")
    want = mx.dequantize(w, s, b, group_size=group_size, bits=bits)
    got = qw.dequantize()
    assert got.dtype == want.dtype == dtype and got.shape == (7, 256)
    assert mx.array_equal(got, want).item()
    want32 = mx.dequantize(w, s, b, group_size=group_size, bits=bits, dtype=mx.float32)
    assert mx.array_equal(qw.dequantize(mx.float32), want32).item()
    assert qw.shape == (7, 256) and qw.dtype == dtype
    assert qw.element_count == 7 * 256 and qw.num_groups == 256 // group_size
    assert qw.nbytes == w.nbytes + s.nbytes + b.nbytes
    assert qw.spec == QuantSpec(bits, group_size)


@pytest.mark.parametrize("bits", [pytest.param(1, marks=ONE_BIT), 3, 4, 8])
def test_matmul_matches_quantized_matmul_and_dense(bits):
    w, s, b = quantized((48, 128), bits, 64)
    qw = QuantizedWeight(w, s, b, bits=bits, group_size=64)
    x = mx.random.normal((5, 128), key=mx.random.key(1))
    want = mx.quantized_matmul(x, w, s, b, transpose=True, group_size=64, bits=bits)
    assert mx.array_equal(qw.matmul(x), want).item()
    dense = qw.dequantize()
    assert mx.allclose(qw.matmul(x), x @ dense.T, atol=1e-4).item()
    v = mx.random.normal((128,), key=mx.random.key(2))
    assert qw.matmul(v).shape == (48,)  # as x @ W.T: it was (1, 48)
    assert mx.array_equal(qw.matmul(v), qw.matmul(v[None])[0]).item()
    assert (qw @ v).shape == (48,)
    assert mx.allclose(qw @ v, dense @ v, atol=1e-4).item()
    m = mx.random.normal((128, 3), key=mx.random.key(3))
    assert mx.allclose(qw @ m, dense @ m, atol=1e-4).item()


@pytest.mark.parametrize("bits", [4, 8])
def test_stacked_expert_weight_matmul_is_per_expert(bits):
    """A (experts, rows, cols) weight: every product is one result per expert, never just
    expert 0 (what mx.quantized_matmul does with a 2-D x and a 3-D weight)."""
    w, s, b = quantized((3, 16, 64), bits, 64)
    qw = QuantizedWeight(w, s, b, bits=bits, group_size=64, name="experts")
    dense = qw.dequantize()
    x = mx.random.normal((5, 64), key=mx.random.key(1))
    got = qw.matmul(x)
    assert got.shape == (3, 5, 16)
    assert mx.allclose(got, x @ mx.swapaxes(dense, -1, -2), atol=1e-4).item()
    for e in range(3):
        expert = QuantizedWeight(w[e], s[e], b[e], bits=bits, group_size=64)
        assert mx.array_equal(got[e], expert.matmul(x)).item()
    m = mx.random.normal((64, 5), key=mx.random.key(2))
    assert (qw @ m).shape == (3, 16, 5)
    assert mx.allclose(qw @ m, dense @ m, atol=1e-4).item()
    v = mx.random.normal((64,), key=mx.random.key(3))
    assert qw.matmul(v).shape == (3, 16)  # it was (3, 1, 16)
    assert (qw @ v).shape == (3, 16)
    assert mx.allclose(qw @ v, dense @ v, atol=1e-4).item()
    batched = mx.random.normal((3, 5, 64), key=mx.random.key(4))  # one input per expert
    want = mx.quantized_matmul(batched, w, s, b, transpose=True, group_size=64, bits=bits)
    assert mx.array_equal(qw.matmul(batched), want).item()


@pytest.mark.parametrize("mode", sorted(FP_MODES))
def test_fp_modes(mode):
    bits, group_size = FP_MODES[mode]
    w, s = quantized((8, 64), bits, group_size, mode=mode)
    qw = QuantizedWeight(w, s, bits=bits, group_size=group_size, mode=mode)
    want = mx.dequantize(w, s, group_size=group_size, bits=bits, mode=mode)
    assert qw.dtype == want.dtype and mx.array_equal(qw.dequantize(), want).item()
    x = mx.random.normal((2, 64), key=mx.random.key(4))
    want_mm = mx.quantized_matmul(x, w, s, group_size=group_size, bits=bits, mode=mode)
    assert mx.array_equal(qw.matmul(x), want_mm).item()
    assert mx.array_equal(qw.to_module()(x), want_mm).item()


def test_higher_rank_weights_dequantize_per_row():
    w, s, b = quantized((2, 3, 128), 4, 32)  # e.g. stacked experts
    qw = QuantizedWeight(w, s, b, bits=4, group_size=32)
    assert qw.shape == (2, 3, 128) and qw.num_groups == 4
    want = mx.dequantize(w, s, b, group_size=32, bits=4)
    assert mx.array_equal(qw.dequantize(), want).item()
    with pytest.raises(QuantizedWeightError) as info:
        qw.to_module()
    assert str(info.value) == "quantized weight: to_module needs a 2-D weight, shape is (2, 3, 128)"
    named = QuantizedWeight(w, s, b, bits=4, group_size=32, name="experts.up_proj")
    with pytest.raises(QuantizedWeightError) as info:
        named.to_module()
    assert str(info.value) == (
        "quantized weight 'experts.up_proj': to_module needs a 2-D weight, shape is (2, 3, 128)"
    )


def test_to_module_linear_shares_arrays_and_computes_like_mlx():
    w, s, b = quantized((32, 64), 4, 64)
    bias = mx.arange(32).astype(mx.float32)
    qw = QuantizedWeight(w, s, b, bits=4, group_size=64, name="model.layers.0.mlp.up_proj")
    m = qw.to_module(bias=bias)
    assert isinstance(m, nn.QuantizedLinear)
    assert m.weight is w and m.scales is s and m.biases is b and m.bias is bias
    assert (m.bits, m.group_size, m.mode) == (4, 64, "affine")
    x = mx.random.normal((3, 64), key=mx.random.key(5))
    # the same layer built the way MLX builds it
    ref = nn.QuantizedLinear(64, 32, bias=True, group_size=64, bits=4)
    ref.update({"weight": w, "scales": s, "biases": b, "bias": bias})
    assert mx.array_equal(m(x), ref(x)).item()
    assert "input_dims=64, output_dims=32, bias=True" in repr(m)
    assert m.trainable_parameters() == {}  # frozen, like MLX's own


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("model.embed_tokens", nn.QuantizedEmbedding),
        ("transformer.wte", nn.QuantizedEmbedding),
        ("model.layers.0.self_attn.q_proj", nn.QuantizedLinear),
        ("lm_head", nn.QuantizedLinear),
    ],
)
def test_to_module_picks_kind_by_name(name, kind):
    w, s, b = quantized((16, 64), 8, 32)
    assert type(QuantizedWeight(w, s, b, bits=8, group_size=32, name=name).to_module()) is kind


def test_to_module_embedding_shares_arrays_and_looks_up_rows():
    w, s, b = quantized((16, 64), 6, 32)
    qw = QuantizedWeight(w, s, b, bits=6, group_size=32, name="lm_head")
    e = qw.to_module("embedding")
    assert isinstance(e, nn.QuantizedEmbedding)
    assert e.weight is w and e.scales is s and e.biases is b
    assert (e.num_embeddings, e.dims) == (16, 64)
    ids = mx.array([3, 0, 15])
    assert mx.array_equal(e(ids), qw.dequantize()[ids]).item()
    with pytest.raises(QuantizedWeightError) as info:
        qw.to_module("embedding", bias=mx.zeros((16,)))
    assert str(info.value) == "quantized weight 'lm_head': an embedding has no output bias"
    with pytest.raises(QuantizedWeightError) as info:
        qw.to_module("conv")
    assert str(info.value) == (
        "quantized weight 'lm_head': kind must be 'linear' or 'embedding', got 'conv'"
    )
    assert isinstance(info.value, (MlxloadError, ValueError))


def test_repr_is_readable():
    w, s, b = quantized((8, 64), 4, 64, mx.float16)
    qw = QuantizedWeight(w, s, b, bits=4, group_size=64, name="model.norm_proj")
    assert repr(qw) == (
        "QuantizedWeight('model.norm_proj', shape=(8, 64), dtype=float16, bits=4, "
        f"group_size=64, mode='affine', biases=True, nbytes={w.nbytes + s.nbytes + b.nbytes})"
    )


def test_from_spec():
    w, s, b = quantized((8, 128), 2, 128)
    qw = QuantizedWeight.from_spec(QuantSpec(2, 128), w, s, b, name="x")
    assert (qw.bits, qw.group_size, qw.mode, qw.name) == (2, 128, "affine", "x")


# ---------------------------------------------------------------- validation messages

W4, S4, B4 = (
    np.zeros((4, 16), np.uint32),
    np.ones((4, 2), np.float16),
    np.zeros((4, 2), np.float16),
)


def make(weight=W4, scales=S4, biases=B4, **kw):
    kw = {"bits": 4, "group_size": 64, "name": "m.proj", **kw}
    arr = [None if a is None else mx.array(a) for a in (weight, scales, biases)]
    return QuantizedWeight(*arr, **kw)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"scales": np.ones((4, 3), np.float16)},
            "quantized weight 'm.proj': scales shape (4, 3) != expected (4, 2): packed weight "
            "(4, 16) holds 128 4-bit values per row = 2 groups of 64",
        ),
        (
            {"scales": np.ones((5, 2), np.float16)},
            "scales shape (5, 2) != expected (4, 2)",
        ),
        (
            {"biases": np.zeros((4, 1), np.float16)},
            "quantized weight 'm.proj': biases shape (4, 1) != scales shape (4, 2)",
        ),
        (
            {"biases": np.zeros((4, 2), np.float32)},
            "biases dtype float32 != scales dtype float16",
        ),
        ({"biases": None}, "affine quantization needs biases, but none were given"),
        ({"weight": np.zeros((4, 16), np.int32)}, "packed weight dtype is int32; expected uint32"),
        (
            {"weight": np.zeros((16,), np.uint32)},
            "packed weight shape (16,) must have at least 2 dims",
        ),
        (
            {"weight": np.zeros((4, 10), np.uint32), "bits": 3, "group_size": 32},
            "packed weight has 10 uint32 words per row; 3-bit values fill whole rows only with "
            "a multiple of 3 words (32 values per 3 words)",
        ),
        (
            {"weight": np.zeros((4, 10), np.uint32), "bits": 6, "group_size": 32},
            "a multiple of 3 words (16 values per 3 words)",
        ),
        (
            {"weight": np.zeros((4, 12), np.uint32)},
            "row length 96 (12 words x 32 / 4 bits) is not a multiple of group_size 64",
        ),
        ({"bits": 7}, "bits=7; affine supports 1, 2, 3, 4, 5, 6, 8"),
        ({"group_size": 16}, "group_size=16; affine supports 32, 64, 128"),
        ({"mode": "int8"}, "mode 'int8' is not one of affine, mxfp4, nvfp4, mxfp8"),
        (
            {"mode": "mxfp4", "group_size": 64},
            "mode mxfp4 requires bits=4 and group_size=32, got bits=4 and group_size=64",
        ),
        (
            {"scales": np.ones((4, 2), np.int32)},
            "scales dtype is int32; affine scales are float16, bfloat16 or float32",
        ),
        (
            {"mode": "mxfp4", "group_size": 32, "scales": np.ones((4, 4), np.float16)},
            "scales dtype is float16; mxfp4 scales are uint8",
        ),
        (
            {
                "mode": "mxfp4",
                "group_size": 32,
                "scales": np.ones((4, 4), np.uint8),
                "biases": np.ones((4, 4), np.uint8),
            },
            "mode mxfp4 has no biases, but biases were given",
        ),
    ],
)
def test_validation_says_what_disagrees(args, message):
    with pytest.raises(QuantizedWeightError) as e:
        make(**args)
    assert message in str(e.value)
    assert isinstance(e.value, MlxloadError) and isinstance(e.value, ValueError)


def test_unnamed_weight_message():
    with pytest.raises(QuantizedWeightError, match=r"^quantized weight: bits=7"):
        make(bits=7, name="")


def test_logical_shape_for_every_width():
    for bits in (1, 2, 3, 4, 5, 6, 8):
        words = 4 * bits  # 128 values
        qw = make(
            weight=np.zeros((2, words), np.uint32),
            scales=np.ones((2, 4), np.float16),
            biases=np.zeros((2, 4), np.float16),
            bits=bits,
            group_size=32,
        )
        assert qw.shape == (2, 128) and qw.element_count == 256
        assert math.prod(qw.shape) == qw.element_count


def test_affine_dequantize_uses_mlxload_kernel(monkeypatch):
    import mlxload.quantized_weight as qw_module

    calls = []

    def spy(w, scales, biases, group_size, bits, dtype=None):
        calls.append((group_size, bits, dtype))
        return mx.dequantize(w, scales, biases, group_size=group_size, bits=bits, dtype=dtype)

    monkeypatch.setattr(qw_module, "_affine_dequantize", spy)
    w, s, b = quantized((2, 3, 64), 5, 32, mx.bfloat16)
    qw = QuantizedWeight(w, s, b, bits=5, group_size=32)
    want = mx.dequantize(w, s, b, group_size=32, bits=5, dtype=mx.float16)
    assert mx.array_equal(qw.dequantize(mx.float16), want).item()
    assert calls == [(32, 5, mx.float16)]


@pytest.mark.parametrize("bits,group_size", [(4.0, 64), (4, 64.0), (True, 64)])
def test_non_integer_bits_or_group_size_are_refused(bits, group_size):
    w, scales, biases = mx.quantize(mx.ones((4, 64)), group_size=64, bits=4)
    with pytest.raises(QuantizedWeightError, match="must be integers"):
        QuantizedWeight(w, scales, biases, bits=bits, group_size=group_size, name="m")
    from mlxload.dequant import UnsupportedQuantizationError, dequantize

    with pytest.raises(UnsupportedQuantizationError):
        dequantize(w, scales, biases, group_size=group_size, bits=bits)


@pytest.mark.parametrize(
    "name,kind",
    [("model.embed_tokens", "QuantizedEmbedding"), ("gpt_neox.embed_out", "QuantizedLinear"),
     ("transformer.wte", "QuantizedEmbedding"), ("lm_head", "QuantizedLinear")],
)  # fmt: skip
def test_to_module_guesses_embeddings_by_name(name, kind):
    w, scales, biases = mx.quantize(mx.ones((8, 64)), group_size=64, bits=4)
    module = QuantizedWeight(w, scales, biases, bits=4, group_size=64, name=name).to_module()
    assert type(module).__name__ == kind


def nvfp4_with_global_scales(shape, seed=0):
    """What mlx-lm's ``quantize_model(..., mode="nvfp4", global_scale=True)`` stores: each
    matrix quantized with its own float32 tensor scale (the largest magnitude)."""
    w = mx.random.normal(shape, key=mx.random.key(seed)).reshape(-1, *shape[-2:])
    gs = mx.max(mx.abs(w), axis=(-2, -1)).astype(mx.float32)
    parts = [mx.quantize(w[i], 16, 4, mode="nvfp4", global_scale=gs[i]) for i in range(len(w))]
    packed = mx.stack([p for p, _ in parts]).reshape(*shape[:-1], -1)
    scales = mx.stack([s for _, s in parts]).reshape(*shape[:-1], -1)
    return packed, scales, gs.reshape(shape[:-2])


@pytest.mark.parametrize("shape", [(8, 64), (1, 8, 64), (3, 8, 64), (2, 2, 4, 32)])
def test_nvfp4_global_scale_dequantizes_each_matrix_like_mx_dequantize(shape):
    w, s, gs = nvfp4_with_global_scales(shape)
    qw = QuantizedWeight(w, s, bits=4, group_size=16, mode="nvfp4", global_scale=gs, name="e")
    flat_w, flat_s = w.reshape(-1, *w.shape[-2:]), s.reshape(-1, *s.shape[-2:])
    want = mx.stack([
        mx.dequantize(flat_w[i], flat_s[i], group_size=16, bits=4, mode="nvfp4",
                      global_scale=gs.reshape(-1)[i])
        for i in range(len(flat_w))
    ]).reshape(shape)  # fmt: skip
    got = qw.dequantize(mx.float32)
    assert got.shape == shape and got.dtype == want.dtype and mx.array_equal(got, want).item()
    for dtype in (None, mx.float16):  # (MLX's own call returns float32 whatever it is asked)
        got = qw.dequantize(dtype)
        assert got.dtype == (dtype or qw.dtype) == (dtype or mx.bfloat16)
        assert mx.array_equal(got, want.astype(got.dtype)).item()
    # the tensor scale matters: without it every value would be off by gs / (6 * 448)
    plain = mx.dequantize(flat_w[0], flat_s[0], group_size=16, bits=4, mode="nvfp4")
    assert not mx.array_equal(plain, want.reshape(-1, *shape[-2:])[0]).item()
    x = mx.random.normal((5, shape[-1]), key=mx.random.key(3))
    assert mx.allclose(qw.matmul(x), x @ mx.swapaxes(want, -1, -2), rtol=1e-5, atol=1e-5).item()
    assert mx.allclose(qw @ x.T, want @ x.T, rtol=1e-5, atol=1e-5).item()
    half = x.astype(mx.float16)
    assert qw.matmul(half).dtype == mx.float16
    plain = QuantizedWeight(w, s, bits=4, group_size=16, mode="nvfp4")  # same layout, no scale
    assert qw.matmul(x[0]).shape == plain.matmul(x[0]).shape  # a 1-D x, as without a scale
    with pytest.raises(QuantizedWeightError, match="'e': x must be float16, bfloat16 or float32"):
        qw.matmul(x.astype(mx.int32))
    assert qw.nbytes == w.nbytes + s.nbytes + gs.nbytes and "global_scale=True" in repr(qw)


def test_nvfp4_global_scale_with_no_matrices():
    w, s, gs = mx.zeros((0, 8, 8), mx.uint32), mx.zeros((0, 8, 4), mx.uint8), mx.zeros((0,))
    qw = QuantizedWeight(w, s, bits=4, group_size=16, mode="nvfp4", global_scale=gs)
    got = qw.dequantize()
    assert got.shape == (0, 8, 64) and got.dtype == mx.bfloat16


@pytest.mark.parametrize(
    ("mode", "gs", "message"),
    [
        ("nvfp4", mx.ones((3,), mx.float16), "global scale is float16 (3,); expected float32 (3,)"),
        ("nvfp4", mx.ones((), mx.float32), "global scale is float32 (); expected float32 (3,)"),
        ("mxfp4", mx.ones((3,), mx.float32), "a global scale belongs to nvfp4 only; mode is mxfp4"),
    ],
)
def test_global_scale_validation(mode, gs, message):
    bits, group_size = FP_MODES[mode]
    w, s = quantized((3, 8, 64), bits, group_size, mode=mode)
    with pytest.raises(QuantizedWeightError, match=re.escape(message)):
        QuantizedWeight(w, s, bits=bits, group_size=group_size, mode=mode, global_scale=gs)


def test_to_module_refuses_a_global_scale():
    w, s, gs = nvfp4_with_global_scales((8, 64))
    qw = QuantizedWeight(w, s, bits=4, group_size=16, mode="nvfp4", global_scale=gs, name="p")
    with pytest.raises(
        QuantizedWeightError, match=r"'p': mlx\.nn's quantized layers take no global"
    ):
        qw.to_module()


def _mlx_without_one_bit(monkeypatch):
    """What an MLX older than 0.32.4 says (no 1-bit quantized ops), for mlxload's checks."""
    import mlxload.quantized_weight as module

    monkeypatch.setattr(module, "mlx_quantizes_bits", lambda bits: bits != 1)


def test_one_bit_under_an_mlx_without_it_multiplies_through_the_dense_weight(monkeypatch):
    # The packing is fixed (32 values per word, low bits first), so mlxload unpacks it
    # itself; only MLX's own quantized matmul and layers need the newer MLX.
    rng = np.random.default_rng(0)
    w = mx.array(rng.integers(0, 2**32, size=(6, 4), dtype=np.uint32))  # 6 rows of 128
    s = mx.array(rng.standard_normal((6, 2)).astype(np.float32))
    b = mx.array(rng.standard_normal((6, 2)).astype(np.float32))
    _mlx_without_one_bit(monkeypatch)
    monkeypatch.setattr(mx, "quantized_matmul", None)  # must not be called
    qw = QuantizedWeight(w, s, b, bits=1, group_size=64, name="proj")
    bits = np.unpackbits(np.array(w).view(np.uint8), axis=-1, bitorder="little")
    groups = np.repeat(np.arange(2), 64)
    dense = bits * np.array(s)[:, groups] + np.array(b)[:, groups]
    assert np.array_equal(np.array(qw.dequantize()), dense.astype(np.float32))
    x = mx.random.normal((3, 128), key=mx.random.key(1))
    assert mx.array_equal(qw.matmul(x), x @ qw.dequantize().T).item()
    with pytest.raises(
        QuantizedWeightError,
        match=r"^quantized weight 'proj': MLX \S+ has no 1-bit quantized layers \(they came "
        r"with MLX 0\.32\.4\): pip install -U mlx, or use dequantize\(\) or matmul\(\)$",
    ):
        qw.to_module()
