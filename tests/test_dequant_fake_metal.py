"""The metal_kernel test double rejects what real MLX rejects, and runs what it accepts."""

from __future__ import annotations

import re

import mlx.core as mx
import pytest
from metal_emulator.emulator import have_compiler
from metal_emulator.fake_metal import FakeMetal

SOURCE = """
uint i = thread_position_in_grid.x;
out[i] = T(inp[i]) * T(SCALE);
"""

pytestmark = pytest.mark.skipif(not have_compiler(), reason="needs a C++ compiler (g++)")


@pytest.fixture
def kernel():
    return FakeMetal().metal_kernel(
        name="scale", input_names=["inp"], output_names=["out"], source=SOURCE
    )


def _call(kernel, **overrides):
    x = mx.arange(10, dtype=mx.float32)
    args = {
        "inputs": [x],
        "template": [("T", mx.float32), ("SCALE", 3)],
        "grid": (10, 1, 1),
        "threadgroup": (4, 1, 1),
        "output_shapes": [(10,)],
        "output_dtypes": [mx.float32],
    }
    args.update(overrides)
    return kernel(**args)


def test_runs_a_valid_call(kernel):
    (out,) = _call(kernel)
    assert mx.array_equal(out, mx.arange(10, dtype=mx.float32) * 3).item()


def test_unwritten_outputs_stay_nan(kernel):
    (out,) = _call(kernel, grid=(6, 1, 1))
    assert mx.array_equal(out[:6], mx.arange(6, dtype=mx.float32) * 3).item()
    assert mx.isnan(out[6:]).all().item()


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"grid": [10, 1, 1]}, TypeError, "`grid` must be a tuple of 3 ints"),
        ({"grid": (10, 1)}, TypeError, "`grid` must be a tuple of 3 ints"),
        ({"threadgroup": (0, 1, 1)}, ValueError, "`threadgroup` values out of range"),
        ({"threadgroup": (64, 32, 1)}, ValueError, "Thread group size (2048) is greater than"),
        ({"inputs": []}, ValueError, "Expected `inputs` to have size 1 but got size 0."),
        ({"output_dtypes": []}, ValueError, "Expected `output_dtypes` to have size 1"),
        ({"output_shapes": [(10,), (2,)]}, ValueError, "Expected `output_shapes` to have size 1"),
        ({"output_shapes": [(-1,)]}, ValueError, "bad output shape (-1,)"),
        ({"output_dtypes": [mx.complex64]}, ValueError, "unsupported output dtype"),
        (
            {"template": [("T", mx.float32), ("SCALE", 3), ("UNUSED", 1)]},
            ValueError,
            "template parameters not used in the source: ['UNUSED']",
        ),
    ],
)
def test_rejects_what_mlx_rejects(kernel, overrides, error, message):
    with pytest.raises(error, match=re.escape(message)):
        _call(kernel, **overrides)


def test_call_is_keyword_only(kernel):
    with pytest.raises(TypeError, match="takes 1 positional argument but 2 were given"):
        kernel([mx.zeros(1)])


def test_construction_rules():
    metal = FakeMetal()
    with pytest.raises(ValueError, match=re.escape("Must specify at least one output.")):
        metal.metal_kernel("k", ["a"], [], "")
    with pytest.raises(ValueError, match=re.escape("bad compile_options {'math_mode': 'x'}")):
        metal.metal_kernel("k", ["a"], ["o"], "", compile_options={"math_mode": "x"})
    metal.metal_kernel("k", ["a"], ["o"], "", compile_options={"math_mode": "safe"})
    assert metal.built == ["k"]
