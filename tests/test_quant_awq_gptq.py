"""AWQ/GPTQ repacking against dequantization written directly from each format's definition.

Packed test tensors are built from random integers by transcriptions of the packing loops of
AutoAWQ (``WQLinear_GEMM.from_linear``) and AutoGPTQ (``QuantLinear.pack``); the reference is
``w[o, i] = (q[i, o] - z[g(i), o]) * s[g(i), o]`` in float32 numpy. Scales are dyadic with few
significant bits, so every product and sum is exact and equality is exact in float32 too.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlxload.awq_gptq import AWQ_ORDER, awq_to_mlx, gptq_to_mlx, pack_stream, unpack_stream
from mlxload.errors import MlxloadError
from mlxload.quant_errors import RepackError

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- packing by definition


def awq_pack(intweight: np.ndarray, bits: int = 4) -> np.ndarray:
    """AutoAWQ GEMM: (rows, cols) ints -> (rows, cols / 8) int32, interleaved order."""
    pack_num = 32 // bits
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]
    rows, cols = intweight.shape
    q = np.zeros((rows, cols // pack_num), dtype=np.uint32)
    for col in range(cols // pack_num):
        for i in range(pack_num):
            q[:, col] |= intweight[:, col * pack_num + order_map[i]].astype(np.uint32) << (i * bits)
    return q.view(np.int32)


def gptq_pack_rows(intweight: np.ndarray, bits: int) -> np.ndarray:
    """AutoGPTQ: (rows, cols) ints -> (rows * bits / 32, cols) words, packed along rows."""
    iw = intweight.astype(np.uint32)
    q = np.zeros((iw.shape[0] // 32 * bits, iw.shape[1]), dtype=np.uint32)
    i = row = 0
    while row < q.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                q[row] |= iw[j] << (bits * (j - i))
            i += 32 // bits
            row += 1
        else:  # 3 bits: 32 values over 3 words
            for j in range(i, i + 10):
                q[row] |= iw[j] << (3 * (j - i))
            i += 10
            q[row] |= iw[i] << 30
            row += 1
            q[row] |= (iw[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                q[row] |= iw[j] << (3 * (j - i) + 1)
            i += 10
            q[row] |= iw[i] << 31
            row += 1
            q[row] |= (iw[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                q[row] |= iw[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
    return q


def gptq_pack_zeros(stored: np.ndarray, bits: int) -> np.ndarray:
    """AutoGPTQ packs qzeros the same way, along the output columns."""
    return gptq_pack_rows(stored.T, bits).T.copy().view(np.int32)


def dyadic_scales(shape, dtype=np.float16) -> np.ndarray:
    """m * 2**-e with m odd < 8: any zero (<= 256) times it is exact even in float16."""
    m = RNG.choice([1, 3, 5, 7], size=shape)
    e = RNG.integers(3, 10, size=shape)
    return (m * np.exp2(-e.astype(np.float64))).astype(dtype)


def reference(q_in_out, zeros, scales, groups) -> np.ndarray:
    """The (out, in) float32 weight from the definition, group g(i) = groups[i]."""
    q = q_in_out.astype(np.float32)
    z = zeros[groups].astype(np.float32)
    s = scales[groups].astype(np.float32)
    return ((q - z) * s).T


def dequant32(qw) -> np.ndarray:
    return np.array(qw.dequantize(mx.float32))


# ---------------------------------------------------------------- bit streams


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_stream_layout_is_mlx_layout(bits):
    values = RNG.integers(0, 1 << bits, size=(3, 128))
    words = pack_stream(values, bits)
    assert words.shape == (3, 128 * bits // 32) and words.dtype == np.uint32
    assert (unpack_stream(words, bits) == values).all()
    ones, zeros = mx.ones((3, 4)), mx.zeros((3, 4))
    got = mx.dequantize(mx.array(words), ones, zeros, group_size=32, bits=bits)
    assert (np.array(got) == values).all()


def test_gptq_three_bit_definition_is_one_stream():
    values = RNG.integers(0, 8, size=(64, 5))
    assert (pack_stream(values.T, 3) == gptq_pack_rows(values, 3).T).all()


# ---------------------------------------------------------------- AWQ


@pytest.mark.parametrize("group_size", [32, 64, 128, -1])
@pytest.mark.parametrize("scale_dtype", [np.float16, np.float32])
@pytest.mark.parametrize("symmetric", [False, True])
def test_awq_matches_definition(group_size, scale_dtype, symmetric):
    n_in, n_out = 256, 48
    n_groups = 1 if group_size == -1 else n_in // group_size
    q = RNG.integers(0, 16, size=(n_in, n_out))
    zeros = np.full((n_groups, n_out), 8) if symmetric else RNG.integers(0, 16, (n_groups, n_out))
    scales = dyadic_scales((n_groups, n_out), scale_dtype)
    qw = awq_to_mlx(
        awq_pack(q), awq_pack(zeros), scales, group_size=group_size, name="model.up_proj"
    )
    groups = np.arange(n_in) // (n_in if group_size == -1 else group_size)
    assert qw.shape == (n_out, n_in) and qw.bits == 4 and qw.name == "model.up_proj"
    assert qw.group_size == (128 if group_size == -1 else group_size)
    assert qw.dtype == mx.float16 if scale_dtype == np.float16 else mx.float32
    np.testing.assert_array_equal(dequant32(qw), reference(q, zeros, scales, groups))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_gptq_with_arbitrary_float32_scales_is_within_two_ulps_and_keeps_the_codes(bits):
    """With non-dyadic scales exactness is impossible (MLX rounds z*s, then q*s + b); the codes
    and groups still come through unchanged, and each value is within a rounding of each term
    (q*s, z*s) of the definition (q - z)*s."""
    n_in, n_out, gs = 256, 32, 64
    q = RNG.integers(0, 2**bits, size=(n_in, n_out))
    zeros = RNG.integers(0, 2**bits, size=(n_in // gs, n_out))
    scales = RNG.uniform(0.001, 0.1, size=zeros.shape).astype(np.float32)
    qw = gptq_to_mlx(
        gptq_pack_rows(q, bits), gptq_pack_zeros(zeros, bits), scales, None,
        bits=bits, group_size=gs, checkpoint_format="gptq_v2",
    )  # fmt: skip
    from mlxload.awq_gptq import unpack_stream

    np.testing.assert_array_equal(unpack_stream(np.array(qw.weight), bits), q.T)
    groups = np.arange(n_in) // gs
    want = reference(q, zeros, scales, groups)
    got = dequant32(qw)
    s32 = scales[groups].astype(np.float32)
    term_ulps = np.spacing(np.abs(q * s32).astype(np.float32)) + np.spacing(
        np.abs(zeros[groups] * s32).astype(np.float32)
    )
    assert np.all(np.abs(got - want) <= 2 * term_ulps.T)
    assert np.mean(got != want) > 0  # the case this test is about: not bit-exact


def test_awq_without_qzeros_uses_zero_eight():
    q = RNG.integers(0, 16, size=(128, 16))
    scales = dyadic_scales((1, 16))
    qw = awq_to_mlx(awq_pack(q), None, scales, group_size=128)
    want = reference(q, np.full((1, 16), 8), scales, np.zeros(128, int))
    np.testing.assert_array_equal(dequant32(qw), want)


def test_awq_interleave_order_is_awqs():
    # one word holding codes 0..7 in its eight slots: output 8c + AWQ_ORDER[k] gets code k
    word = np.array([[sum(k << (4 * k) for k in range(8))]], dtype=np.uint32)
    q = np.tile(word, (32, 1)).view(np.int32)
    scales = np.ones((1, 8), np.float32)
    qw = awq_to_mlx(q, np.zeros((1, 1), np.int32), scales, group_size=32)
    got = dequant32(qw)[:, 0]
    assert list(got[list(AWQ_ORDER)]) == list(range(8))


def test_awq_matches_mlx_lm_conversion():
    from mlx_lm.utils import _transform_awq_weights

    q = RNG.integers(0, 16, size=(256, 32))
    zeros = RNG.integers(0, 16, size=(2, 32))
    scales = RNG.random((2, 32)).astype(np.float16)  # arbitrary values: same rounding steps
    qw = awq_to_mlx(awq_pack(q), awq_pack(zeros), scales, group_size=128)
    theirs, _ = _transform_awq_weights(
        {
            "l.qweight": mx.array(awq_pack(q)),
            "l.qzeros": mx.array(awq_pack(zeros)),
            "l.scales": mx.array(scales),
        },
        {"bits": 4, "group_size": 128},
    )
    for ours, key in ((qw.weight, "weight"), (qw.scales, "scales"), (qw.biases, "biases")):
        assert mx.array_equal(ours, theirs[f"l.{key}"]).item()


def test_awq_rounding_with_arbitrary_fp16_scales_is_one_bias_rounding():
    q = RNG.integers(0, 16, size=(128, 32))
    zeros = RNG.integers(0, 16, size=(1, 32))
    scales = (RNG.random((1, 32)) * 0.1).astype(np.float16)
    qw = awq_to_mlx(awq_pack(q), awq_pack(zeros), scales, group_size=128)
    want_bias = (-(zeros.astype(np.float32) * scales.astype(np.float32))).astype(np.float16).T
    assert (np.array(qw.biases) == want_bias).all()
    ref = reference(q, zeros, scales, np.zeros(128, int))
    np.testing.assert_allclose(dequant32(qw), ref, atol=1e-3)


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_awq_other_bits_are_refused(bits):
    with pytest.raises(RepackError) as e:
        awq_to_mlx(np.zeros((32, 4), np.int32), None, np.ones((1, 32)), group_size=32, bits=bits)
    assert "AutoAWQ defines its interleaved packing only for 4 bits" in str(e.value)
    assert isinstance(e.value, MlxloadError) and isinstance(e.value, ValueError)


def test_awq_shape_errors():
    with pytest.raises(RepackError, match=r"m: qzeros shape \(2, 4\) != expected \(1, 4\)"):
        awq_to_mlx(
            np.zeros((128, 4), np.int32),
            np.zeros((2, 4), np.int32),
            np.ones((1, 32), np.float16),
            group_size=128,
            name="m",
        )
    with pytest.raises(RepackError, match="m: scales have 1 groups; 128 inputs in groups of 64"):
        awq_to_mlx(np.zeros((128, 4), np.int32), None, np.ones((1, 32)), group_size=64, name="m")
    with pytest.raises(RepackError, match=r"scales must be a float \(groups, 32\) array"):
        awq_to_mlx(np.zeros((128, 4), np.int32), None, np.ones((1, 16)), group_size=128)


# ---------------------------------------------------------------- GPTQ


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [32, 128, -1])
@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
@pytest.mark.parametrize("sym", [True, False])
def test_gptq_matches_definition(bits, group_size, fmt, sym):
    n_in, n_out = 256, 32
    n_groups = 1 if group_size == -1 else n_in // group_size
    q = RNG.integers(0, 1 << bits, size=(n_in, n_out))
    if sym:
        zeros = np.full((n_groups, n_out), 1 << (bits - 1))
    else:  # v1 can't store zero 0 (z - 1 = -1): draw 1..2**bits for it
        lo = 1 if fmt == "gptq" else 0
        zeros = RNG.integers(lo, (1 << bits) + lo, size=(n_groups, n_out))
    stored = zeros - 1 if fmt == "gptq" else zeros
    scales = dyadic_scales((n_groups, n_out))
    g_idx = np.arange(n_in) // (n_in if group_size == -1 else group_size)
    qw = gptq_to_mlx(
        gptq_pack_rows(q, bits).view(np.int32),
        gptq_pack_zeros(stored, bits),
        scales,
        g_idx.astype(np.int32),
        bits=bits,
        group_size=group_size,
        checkpoint_format=fmt,
        name="model.down_proj",
    )
    assert qw.shape == (n_out, n_in) and qw.bits == bits
    assert qw.group_size == (128 if group_size == -1 else group_size)
    np.testing.assert_array_equal(dequant32(qw), reference(q, zeros, scales, g_idx))


def test_gptq_v1_all_ones_zero_reads_as_two_to_the_bits():
    q = RNG.integers(0, 16, size=(64, 32))
    stored = np.full((1, 32), 15)  # z - 1 = 15 -> z = 16, not wrapped to 0
    scales = dyadic_scales((1, 32))
    qw = gptq_to_mlx(
        gptq_pack_rows(q, 4), gptq_pack_zeros(stored, 4), scales, bits=4, group_size=64
    )
    want = reference(q, np.full((1, 32), 16), scales, np.zeros(64, int))
    np.testing.assert_array_equal(dequant32(qw), want)


def test_gptq_without_qzeros_is_symmetric():
    q = RNG.integers(0, 8, size=(96, 8))
    scales = dyadic_scales((3, 8), np.float32)
    qw = gptq_to_mlx(gptq_pack_rows(q, 3), None, scales, bits=3, group_size=32)
    want = reference(q, np.full((3, 8), 4), scales, np.arange(96) // 32)
    np.testing.assert_array_equal(dequant32(qw), want)


def test_gptq_group_256_and_relabelled_blocks_convert_exactly():
    q = RNG.integers(0, 16, size=(512, 32))
    zeros = RNG.integers(1, 17, size=(2, 32))
    scales = dyadic_scales((2, 32))
    # group size 256: MLX groups of 128 repeat each source group's scale
    qw = gptq_to_mlx(
        gptq_pack_rows(q, 4), gptq_pack_zeros(zeros - 1, 4), scales, bits=4, group_size=256
    )
    assert qw.group_size == 128 and qw.scales.shape == (32, 4)
    np.testing.assert_array_equal(dequant32(qw), reference(q, zeros, scales, np.arange(512) // 256))
    # act-order whose g_idx still gives each aligned 128-run one group (groups swapped)
    g_idx = 1 - np.arange(512) // 256
    qw = gptq_to_mlx(
        gptq_pack_rows(q, 4),
        gptq_pack_zeros(zeros - 1, 4),
        scales,
        g_idx,
        bits=4,
        group_size=256,
    )
    np.testing.assert_array_equal(dequant32(qw), reference(q, zeros, scales, g_idx))


def test_gptq_act_order_with_permuted_g_idx_is_refused():
    n_in = 256
    g_idx = RNG.permutation(np.arange(n_in) // 128)
    with pytest.raises(RepackError) as e:
        gptq_to_mlx(
            np.zeros((32, 8), np.int32),
            None,
            np.ones((2, 8), np.float16),
            g_idx,
            bits=4,
            group_size=128,
            name="model.layers.0.mlp.down_proj",
        )
    bad = int(np.nonzero(g_idx[1:] != g_idx[:-1])[0][0]) + 1
    msg = str(e.value)
    assert msg.startswith(
        f"model.layers.0.mlp.down_proj: g_idx puts input {bad} in group {g_idx[bad]} "
        f"but input {bad - 1} in group {g_idx[bad - 1]}"
    )
    assert "act-order (desc_act)" in msg and "re-quantize without desc_act" in msg


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 5}, "bits=5; supported: 2, 3, 4, 8"),
        ({"checkpoint_format": "marlin"}, "checkpoint_format 'marlin'; supported: gptq, gptq_v2"),
        ({"g_idx": np.zeros(10, np.int32)}, "g_idx has 10 entries; qweight has 128 inputs"),
        ({"g_idx": np.full(128, 3, np.int32)}, "group indices range over [3, 3] but there are 1"),
        ({"qzeros": np.zeros((2, 4), np.int32)}, "qzeros shape (2, 4) != expected (1, 4)"),
        ({"qweight": np.zeros((16, 32), np.float32)}, "qweight must be a 2-D int32/uint32 array"),
    ],
)
def test_gptq_errors(kwargs, message):
    args = {
        "qweight": np.zeros((16, 32), np.int32),
        "qzeros": None,
        "scales": np.ones((1, 32), np.float16),
        "bits": 4,
        "group_size": 128,
        "name": "m",
        **kwargs,
    }
    with pytest.raises(RepackError) as e:
        gptq_to_mlx(
            args.pop("qweight"),
            args.pop("qzeros"),
            args.pop("scales"),
            args.pop("g_idx", None),
            **args,
        )
    assert message in str(e.value)


def test_gptq_without_g_idx_takes_a_partial_last_group():
    """320 inputs in groups of 128 (128 + 128 + 64), as GPTQ's quantizer groups them: refused
    without g_idx ("not a multiple of group_size"), though with g_idx it loaded exactly."""
    q = RNG.integers(0, 16, size=(320, 32))
    zeros = RNG.integers(1, 16, size=(3, 32))
    scales = dyadic_scales((3, 32))
    groups = np.arange(320) // 128
    args = (gptq_pack_rows(q, 4), gptq_pack_zeros(zeros, 4), scales)
    without = gptq_to_mlx(*args, bits=4, group_size=128, checkpoint_format="gptq_v2")
    with_g_idx = gptq_to_mlx(
        *args, groups.astype(np.int32), bits=4, group_size=128, checkpoint_format="gptq_v2"
    )
    assert without.group_size == with_g_idx.group_size == 64
    np.testing.assert_array_equal(dequant32(without), reference(q, zeros, scales, groups))
    np.testing.assert_array_equal(dequant32(without), dequant32(with_g_idx))
    with pytest.raises(
        RepackError, match="m: scales have 2 groups; 320 inputs in groups of 128 make 3"
    ):
        gptq_to_mlx(*args[:2], scales[:2], bits=4, group_size=128, name="m")
