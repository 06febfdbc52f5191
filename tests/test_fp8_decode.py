"""8-bit float formats MLX can't hold: decoded exactly, checked against what defines them."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

import mlxload
from mlxload.fp8_tables import FP8_FORMATS, fp8_table

CODES = np.arange(256, dtype=np.uint8)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-equal, except that any NaN equals any NaN of the same sign (payloads differ)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    nan = np.isnan(a)
    return bool(
        np.array_equal(nan, np.isnan(b))
        and np.array_equal(np.signbit(a), np.signbit(b))
        and np.array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32))
    )


def test_e4m3_matches_mlx_from_fp8():
    ours = fp8_table("F8_E4M3")
    mlx = np.array(mx.from_fp8(mx.array(CODES), dtype=mx.float32))
    assert _same(ours, mlx)
    assert [hex(c) for c in CODES if math.isnan(ours[c])] == ["0x7f", "0xff"]


def test_e5m2_is_the_top_byte_of_a_float16():
    as_float16 = (CODES.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    assert _same(fp8_table("F8_E5M2"), as_float16)


@pytest.mark.parametrize(("fnuz", "ieee"), [("F8_E4M3FNUZ", "F8_E4M3"), ("F8_E5M2FNUZ", "F8_E5M2")])
def test_fnuz_is_its_sibling_with_one_more_bias_and_nan_at_negative_zero(fnuz, ieee):
    """Bias + 1 halves every value the two formats both spell as a finite number; the FNUZ
    format has no infinity, no -0, and one NaN: 0x80."""
    ours, sibling = fp8_table(fnuz), fp8_table(ieee)
    both_finite = np.isfinite(sibling) & (CODES != 0x80)
    assert np.array_equal(ours[both_finite], sibling[both_finite] / 2)
    assert [hex(c) for c in CODES if not np.isfinite(ours[c])] == ["0x80"]
    assert not np.signbit(ours[0]) and ours[0] == 0


@pytest.mark.parametrize(
    ("name", "largest", "smallest"),
    [
        ("F8_E4M3", 448.0, 2.0**-9),
        ("F8_E5M2", 57344.0, 2.0**-16),
        ("F8_E4M3FNUZ", 240.0, 2.0**-10),
        ("F8_E5M2FNUZ", 57344.0, 2.0**-17),
        ("F8_E8M0", 2.0**127, 2.0**-127),
    ],
)
def test_range_of_each_format(name, largest, smallest):
    table = fp8_table(name)
    finite = table[np.isfinite(table)]
    assert finite.max() == largest
    assert finite[finite > 0].min() == smallest


def test_e8m0_is_unsigned_powers_of_two():
    table = fp8_table("F8_E8M0")
    assert [table[c] == 2.0 ** (c - 127) for c in range(255)] == [True] * 255
    assert math.isnan(table[255])


@pytest.mark.parametrize("name", sorted(FP8_FORMATS))
@pytest.mark.parametrize("target", [mx.float32, mx.bfloat16, mx.float16])
def test_convert_raw_decodes_every_code(name, target):
    raw = mx.array(CODES.reshape(16, 16))
    got = mlxload.convert_raw(raw, name, target)
    assert got.shape == (16, 16) and got.dtype == target
    want = mx.array(fp8_table(name).reshape(16, 16)).astype(target)
    assert mx.array_equal(got, want, equal_nan=True).item()
    if target != mx.float16 or name != "F8_E8M0":  # float16 can't hold 2**127, the rest can
        exact = np.array(got.astype(mx.float32))
        assert np.array_equal(exact, fp8_table(name).reshape(16, 16), equal_nan=True)


def test_sub_byte_formats_have_no_conversion():
    with pytest.raises(NotImplementedError, match=r"no conversion from F6_E2M3.*raw uint8 bytes"):
        mlxload.convert_raw(mx.zeros((3,), dtype=mx.uint8), "F6_E2M3")


def test_e4m3_decodes_exactly_into_float64():
    """mx.from_fp8 into float64 returned uninitialised memory (2.0000004731, 5.6e-315...)."""
    codes = mx.arange(256).astype(mx.uint8)
    want = np.array(mlxload.convert_raw(codes, "F8_E4M3", mx.float32), dtype=np.float64)
    got = mlxload.convert_raw(codes, "F8_E4M3", mx.float64)
    assert got.dtype == mx.float64
    np.testing.assert_array_equal(np.array(got), want)


@pytest.mark.parametrize("fmt", ["F8_E4M3", *FP8_FORMATS])
def test_only_uint8_bytes_decode_and_only_into_floats(fmt):
    """An int8 -1 indexed the table out of bounds (SIGSEGV); an int32 target gave INT_MIN."""
    with pytest.raises(TypeError, match=f"uint8 bytes of a {fmt} tensor, got mlx.core.int8"):
        mlxload.convert_raw(mx.array([-1, 3], dtype=mx.int8), fmt)
    with pytest.raises(TypeError, match=f"decodes {fmt} into a floating dtype, not mlx.core.int32"):
        mlxload.convert_raw(mx.array([3], dtype=mx.uint8), fmt, mx.int32)
