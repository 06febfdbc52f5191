"""The Metal dequantization path, run on Linux through the kernel emulator.

``mx.fast.metal_kernel`` is replaced by a test double that compiles the real
``kernels/affine_dequantize.metal`` body as C++ and runs it over the grid, and
``mx.metal.is_available`` pretends to be True, so ``mlxload.dequantize`` takes exactly the
code path it takes on a Mac. The oracle is ``mx.dequantize`` on inputs from ``mx.quantize``.
"""

from __future__ import annotations

import itertools

import mlx.core as mx
import numpy as np
import pytest
from bit_widths import BITS, ORACLE_BITS
from metal_emulator.emulator import have_compiler
from metal_emulator.fake_metal import FakeMetal

import mlxload.metal_dequant as metal_dequant
from mlxload import dequant
from mlxload.kernel_sources import kernel_header, kernel_source

GROUPS = (32, 64, 128)
FLOATS = (mx.float16, mx.bfloat16, mx.float32)

pytestmark = pytest.mark.skipif(not have_compiler(), reason="needs a C++ compiler (g++)")


@pytest.fixture(scope="module", autouse=True)
def _on_the_cpu():
    """The emulator stands in for Metal's kernel and MLX's CPU for Metal's ``mx.dequantize``:
    on a CUDA machine the GPU rounds otherwise (fused multiply-adds) and can't 1-bit quantize."""
    device = mx.default_device()
    mx.set_default_device(mx.cpu)
    yield
    mx.set_default_device(device)


def _quantized(shape, dtype, group_size, bits, seed=0):
    x = mx.random.normal(shape, key=mx.random.key(seed)).astype(dtype)
    return mx.quantize(x, group_size=group_size, bits=bits)


def _matrix_case(bits, group_size, dtype):
    """5 rows (odd) of 3 groups, and a 3-D batch (2, 3) of one group per row."""
    seed = bits * 1000 + group_size
    return [
        _quantized((5, 3 * group_size), dtype, group_size, bits, seed),
        _quantized((2, 3, group_size), dtype, group_size, bits, seed + 1),
    ]


def _assert_exact(got, ref):
    assert got.dtype == ref.dtype
    assert got.shape == ref.shape
    assert mx.array_equal(got, ref).item(), f"{mx.sum(got != ref).item()} elements differ"


@pytest.fixture(scope="module")
def planned():
    """Compile every kernel instantiation this module uses in one compiler run."""
    plan = FakeMetal(plan_only=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mx.fast, "metal_kernel", plan.metal_kernel)
        mp.setattr(mx.metal, "is_available", lambda: True)
        mp.setattr(dequant, "backend", lambda: "metal")  # (a Mac computes on its GPU)
        metal_dequant.clear_kernel_cache()
        # Both probe variants for every dtype combination (planned outputs never match, so
        # the probe launches both), then every call with the rounding the probe will pick.
        for out in FLOATS:
            metal_dequant.probe_rounding(out, out, out)
        for sd, bd, out in [*_MIXED, (mx.float16, mx.bfloat16, mx.float32)]:
            metal_dequant.probe_rounding(out, sd, bd)
        mp.setattr(metal_dequant, "rounding", lambda *dtypes: metal_dequant.TWO_STEP)
        for bits, gs, out in itertools.product(ORACLE_BITS, GROUPS, FLOATS):
            for w, s, b in _matrix_case(bits, gs, out):
                dequant.dequantize(w, s, b, gs, bits)
        for sd, bd, out in _MIXED:
            w, s, b = _quantized((3, 64), sd, 64, 4)
            dequant.dequantize(w, s, b.astype(bd), 64, 4, dtype=out)
    metal_dequant.clear_kernel_cache()
    plan.compile_planned()
    return plan


@pytest.fixture
def fake(planned, monkeypatch):
    """A fresh test double in place of Metal, reusing the planned compiles."""
    metal = FakeMetal()
    metal.adopt(planned)
    monkeypatch.setattr(mx.fast, "metal_kernel", metal.metal_kernel)
    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    monkeypatch.setattr(dequant, "backend", lambda: "metal")
    metal_dequant.clear_kernel_cache()
    yield metal
    metal_dequant.clear_kernel_cache()


@pytest.mark.parametrize("out_dtype", FLOATS, ids=str)
@pytest.mark.parametrize("group_size", GROUPS)
@pytest.mark.parametrize("bits", BITS)
def test_matches_mx_dequantize(fake, bits, group_size, out_dtype):
    for w, s, b in _matrix_case(bits, group_size, out_dtype):
        got = dequant.dequantize(w, s, b, group_size=group_size, bits=bits)
        _assert_exact(got, mx.dequantize(w, s, b, group_size=group_size, bits=bits))
    assert dequant.last_path() == dequant.PATH_METAL


# (scales dtype, biases dtype, output dtype): MLX multiplies in the scales' dtype, adds in
# the result type of scales and biases, then casts.
_MIXED = [
    (mx.float16, mx.float16, mx.float32),
    (mx.bfloat16, mx.bfloat16, mx.float16),
    (mx.float32, mx.float32, mx.bfloat16),
    (mx.float16, mx.float32, mx.float16),
    (mx.float16, mx.bfloat16, mx.bfloat16),
    (mx.bfloat16, mx.float32, mx.float32),
]


@pytest.mark.parametrize(("scales_dtype", "biases_dtype", "out_dtype"), _MIXED, ids=str)
def test_mixed_dtypes_match_mx_dequantize(fake, scales_dtype, biases_dtype, out_dtype):
    w, s, b = _quantized((3, 64), scales_dtype, 64, 4, seed=7)
    b = b.astype(biases_dtype)
    got = dequant.dequantize(w, s, b, 64, 4, dtype=out_dtype)
    _assert_exact(got, mx.dequantize(w, s, b, group_size=64, bits=4, dtype=out_dtype))
    assert dequant.last_path() == dequant.PATH_METAL  # the probe told the roundings apart


def test_default_dtype_of_mixed_scales_and_biases_is_float32(fake):
    w, s, b = _quantized((3, 64), mx.float16, 64, 4)
    got = dequant.dequantize(w, s, b.astype(mx.bfloat16), 64, 4)
    _assert_exact(got, mx.dequantize(w, s, b.astype(mx.bfloat16), group_size=64, bits=4))
    assert got.dtype == mx.float32
    assert dequant.last_path() == dequant.PATH_METAL  # the kernel's result, not MLX's own


def test_kernel_is_built_once_and_dispatched_per_call(fake):
    for bits in (3, 4):
        w, s, b = _quantized((5, 128), mx.float16, 64, bits)
        dequant.dequantize(w, s, b, 64, bits)
        dequant.dequantize(w, s, b, 64, bits)
    assert fake.built == ["mlxload_affine_dequantize"]
    (kernel,) = fake.kernels
    assert kernel.source == kernel_source("affine_dequantize")
    assert kernel.header == kernel_header("affine_dequantize") != ""
    (*probes,) = kernel.calls[:2]  # the float16 probe runs both roundings once
    calls = kernel.calls[2:]
    assert [p["spec"].kernel_name for p in probes] == [
        "custom_kernel_mlxload_affine_dequantize__float16_t_float16_t_float16_t_4_64_"
        f"{fused}_uint32_t_float16_t_float16_t_float16_t"
        for fused in (0, 1)
    ]
    assert metal_dequant.rounding(mx.float16, mx.float16, mx.float16) == metal_dequant.TWO_STEP
    assert [c["grid"] for c in calls] == [(16, 5, 1)] * 4
    assert [c["threadgroup"] for c in calls] == [(16, 5, 1)] * 4
    assert [c["output_shapes"] for c in calls] == [[(5, 128)]] * 4
    names = [c["spec"].kernel_name for c in calls]
    assert names[0] == (
        "custom_kernel_mlxload_affine_dequantize__float16_t_float16_t_float16_t_3_64_0"
        "_uint32_t_float16_t_float16_t_float16_t"
    )
    assert names[0] == names[1] != names[2] == names[3]
    assert dequant.last_path() == dequant.PATH_METAL


@pytest.mark.parametrize(
    ("rows", "row_len", "grid", "threadgroup"),
    [
        (1, 32, (4, 1, 1), (4, 1, 1)),
        (7, 64, (8, 7, 1), (8, 7, 1)),
        (3, 4096, (512, 3, 1), (256, 1, 1)),
        (1001, 128, (16, 1001, 1), (16, 16, 1)),
    ],
)
def test_launch_dims_cover_the_data(rows, row_len, grid, threadgroup):
    assert metal_dequant.launch_dims(rows, row_len) == (grid, threadgroup)


def test_single_pack_input_is_handled(fake):
    # 1 row of 32 4-bit values: 4 words, so MLX passes it in the constant address space.
    w, s, b = _quantized((1, 32), mx.float32, 32, 4)
    got = dequant.dequantize(w, s, b, 32, 4)
    _assert_exact(got, mx.dequantize(w, s, b, group_size=32, bits=4))
    assert fake.kernels[0].calls[-1]["spec"].kernel_name.endswith("_uint32_tc_floatc_floatc_float")


def test_emulator_catches_a_single_rounding_kernel(fake, monkeypatch):
    """The oracle has teeth: computing in float and rounding once is not bit-exact, and the
    probe catches it and falls back to mx.dequantize."""
    two_step = "S qs = S(float(q)) * scale;\n    out[first + j] = T(A(qs) + bias);"
    broken = kernel_source("affine_dequantize").replace(
        two_step, "out[first + j] = T(float(q) * float(scale) + float(bias));"
    )
    assert broken != kernel_source("affine_dequantize")
    monkeypatch.setattr(metal_dequant, "kernel_source", lambda name: broken)
    w, s, b = _quantized((64, 128), mx.float16, 64, 4, seed=3)
    ref = mx.dequantize(w, s, b, group_size=64, bits=4)
    raw = metal_dequant.affine_dequantize_metal(w, s, b, 64, 4, mx.float16)
    assert raw.dtype == ref.dtype and raw.shape == ref.shape
    assert not mx.array_equal(raw, ref).item()
    _assert_exact(dequant.dequantize(w, s, b, 64, 4), ref)  # caught: mx.dequantize instead
    assert dequant.last_path() == dequant.PATH_MLX
    assert "neither rounding" in metal_dequant.rounding_failures()[(mx.float16,) * 3]


def test_probe_that_cannot_tell_the_roundings_apart_falls_back(fake, monkeypatch):
    real = metal_dequant.affine_dequantize_metal

    def both_equal(*args, fused=False):
        return real(*args, fused=False)  # as if the two roundings never differed

    monkeypatch.setattr(metal_dequant, "affine_dequantize_metal", both_equal)
    assert metal_dequant.rounding(mx.float32, mx.float32, mx.float32) is None
    assert (
        "could not tell the two roundings apart"
        in (metal_dequant.rounding_failures()[(mx.float32,) * 3])
    )


def _fused_reference(w, scales, biases, group_size, bits, dtype):
    """What MLX's kernel computes if ``scale * d + bias`` is compiled into an fma."""
    ones = mx.ones(scales.shape, dtype=mx.float32)
    q = np.array(mx.dequantize(w, ones, ones * 0, group_size=group_size, bits=bits))
    s = np.repeat(np.array(scales.astype(mx.float32)), group_size, axis=-1).astype(np.float64)
    b = np.repeat(np.array(biases.astype(mx.float32)), group_size, axis=-1).astype(np.float64)
    exact = q * s + b  # exact in float64 for these magnitudes: one rounding, below
    return mx.array(exact.astype(np.float16 if dtype == mx.float16 else np.float32)).astype(dtype)


@pytest.mark.parametrize("dtype", [mx.float16, mx.float32], ids=str)
def test_probe_picks_the_fused_rounding_where_mlx_fuses(fake, monkeypatch, dtype):
    """On a GPU whose compiler contracts MLX's ``scale * d + bias``, the kernel must too."""
    monkeypatch.setattr(metal_dequant, "_reference", _fused_reference)
    w, s, b = _quantized((16, 256), dtype, 64, 4, seed=5)
    got = dequant.dequantize(w, s, b, 64, 4)
    assert metal_dequant.rounding(dtype, dtype, dtype) == metal_dequant.FUSED
    assert dequant.last_path() == dequant.PATH_METAL
    _assert_exact(got, _fused_reference(w, s, b, 64, 4, dtype))
    if dtype == mx.float16:  # where one rounding and two differ, it is the fused one
        assert not mx.array_equal(got, mx.dequantize(w, s, b, group_size=64, bits=4)).item()


@pytest.fixture
def unbuildable(monkeypatch):
    """A Metal whose metal_kernel refuses to build anything."""

    def refuse(**kwargs):
        raise RuntimeError("[metal_kernel] Unable to build metal library from source")

    monkeypatch.setattr(mx.fast, "metal_kernel", refuse)
    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    monkeypatch.setattr(dequant, "backend", lambda: "metal")
    metal_dequant.clear_kernel_cache()
    yield
    metal_dequant.clear_kernel_cache()


def test_kernel_that_fails_to_build_falls_back_to_mx_dequantize(unbuildable):
    w, s, b = _quantized((4, 128), mx.float32, 64, 3)
    got = dequant.dequantize(w, s, b, 64, 3)
    _assert_exact(got, mx.dequantize(w, s, b, group_size=64, bits=3))
    assert dequant.last_path() == dequant.PATH_MLX
    (why,) = metal_dequant.rounding_failures().values()
    assert why.startswith("the kernel failed to build or run: RuntimeError: [metal_kernel]")


@pytest.mark.parametrize("bits", BITS)
def test_arbitrary_words_match_mx_dequantize(fake, bits):
    # Every bit pattern, not only what mx.quantize writes; negative scales too.
    rng = np.random.default_rng(bits)
    w = mx.array(rng.integers(0, 2**32, size=(7, 4 * bits), dtype=np.uint32))
    s = mx.array(rng.standard_normal((7, 2)).astype(np.float16))
    b = mx.array(rng.standard_normal((7, 2)).astype(np.float16))
    got = dequant.dequantize(w, s, b, group_size=64, bits=bits)
    _assert_exact(got, mx.dequantize(w, s, b, group_size=64, bits=bits))
    assert dequant.last_path() == dequant.PATH_METAL  # the kernel's result, not MLX's own


def test_doctor_kernel_check_names_the_rounding(fake):
    from mlxload.doctor_checks import OK, check_metal_kernels

    check = check_metal_kernels()
    assert check.status == OK, check
    assert check.detail.endswith(
        "(rounding: float16 two-step, bfloat16 two-step, float32 two-step)"
    )


def test_doctor_kernel_check_warns_when_dequantize_falls_back(unbuildable):
    from mlxload.doctor_checks import WARN, check_metal_kernels

    check = check_metal_kernels()
    assert check.status == WARN
    assert "float16: the kernel can't match mx.dequantize here (the kernel failed" in check.detail
    assert check.detail.endswith("dequantize uses mx.dequantize instead, results stay exact")


def test_a_kernel_that_fails_to_build_and_bits_mlx_cant_dequantize_take_the_ops_path(
    unbuildable, monkeypatch
):
    """No mx.dequantize result to match (an MLX without 1-bit): the rounding was forced to
    the kernel's, which then raised MLX's build error; the exact ops path serves instead."""
    monkeypatch.setattr(dequant, "mlx_quantizes_bits", lambda bits: bits != 1)
    w, s, b = _quantized((4, 128), mx.float16, 64, 1)
    got = dequant.dequantize(w, s, b, 64, 1)
    assert dequant.last_path() == dequant.PATH_CPU
    _assert_exact(got, mx.dequantize(w, s, b, group_size=64, bits=1))


def test_a_mac_computing_on_its_cpu_never_runs_the_metal_kernel(fake, monkeypatch):
    """mx.set_default_device(mx.cpu) on a Mac: a custom Metal kernel can't run there ('Custom
    Metal kernels only run on GPU'), though Metal is available."""
    from mlxload import backend as backend_module

    monkeypatch.setattr(dequant, "backend", backend_module.backend)  # the real question
    assert mx.default_device() == mx.cpu  # (this machine; on a Mac: set_default_device)
    w, s, b = _quantized((4, 128), mx.float16, 64, 4)
    got = dequant.dequantize(w, s, b, 64, 4)
    assert dequant.last_path() == dequant.PATH_CPU and fake.built == []
    _assert_exact(got, mx.dequantize(w, s, b, group_size=64, bits=4))


def test_threads_asking_first_at_once_build_one_kernel_and_probe_once(monkeypatch):
    import threading
    import time

    built = []

    def slow_metal_kernel(**kwargs):
        built.append(kwargs["name"])
        time.sleep(0.05)  # every thread arrives while the first is building
        return object()

    monkeypatch.setattr(mx.fast, "metal_kernel", slow_metal_kernel)
    monkeypatch.setattr(metal_dequant, "probe_rounding", lambda *d: built.append(d) or "x")
    metal_dequant.clear_kernel_cache()
    try:
        kernels, modes = [], []
        jobs = [
            threading.Thread(
                target=lambda: (
                    kernels.append(metal_dequant.get_kernel(metal_dequant.AFFINE_KERNEL)),
                    modes.append(metal_dequant.rounding(mx.float16, mx.float16, mx.float16)),
                )
            )
            for _ in range(4)
        ]
        for job in jobs:
            job.start()
        for job in jobs:
            job.join()
    finally:
        metal_dequant.clear_kernel_cache()
    assert len({id(k) for k in kernels}) == 1 and modes == ["x"] * 4
    assert built == ["mlxload_affine_dequantize", (mx.float16, mx.float16, mx.float16)]
