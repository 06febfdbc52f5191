"""mlxload.quant_summary: what inspect says of a checkpoint's quantization, from headers."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mlxload.header import TensorInfo
from mlxload.quant_config import QuantizationConfig
from mlxload.quant_summary import summarize


def _infos(tensors: dict[str, mx.array]) -> dict[str, TensorInfo]:
    dtypes = {mx.uint32: "U32", mx.int32: "I32", mx.float16: "F16", mx.uint8: "U8"}
    out, at = {}, 0
    for name, a in tensors.items():
        out[name] = TensorInfo(name, dtypes[a.dtype], tuple(a.shape), at, at + a.nbytes, 0)
        at += a.nbytes
    return out


def _mlx_module(name: str, rows: int, cols: int, bits: int, group: int) -> dict[str, mx.array]:
    x = mx.random.normal((rows, cols), key=mx.random.key(0)).astype(mx.float16)
    w, s, b = mx.quantize(x, group_size=group, bits=bits)
    return {f"{name}.weight": w, f"{name}.scales": s, f"{name}.biases": b}


def _config(**section) -> QuantizationConfig:
    return QuantizationConfig.from_model_config({"quantization": section}, source="c.json")


@pytest.mark.parametrize(("bits", "group"), [(2, 32), (3, 64), (4, 128), (6, 64), (8, 32)])
def test_bits_per_weight_counts_every_stored_byte(bits, group):
    infos = _infos(_mlx_module("a", 16, 256, bits, group) | _mlx_module("b", 8, 512, bits, group))
    summary = summarize(infos, _config(bits=bits, group_size=group))
    stored = 8 * sum(i.nbytes for i in infos.values())
    assert summary.bits_per_weight == stored / (16 * 256 + 8 * 512)
    assert summary.specs == {f"{bits}-bit, group {group}, affine": 2}
    assert summary.problem is None


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"bits": 8, "group_size": 64}, "the config's bits/group size don't fit the stored"),
        ({"bits": 4, "group_size": 128}, "the config's bits/group size don't fit the stored"),
        ({"bits": 4, "group_size": 64, "b": False}, "the config says 1 module(s) with packed"),
    ],
)
def test_a_config_the_tensors_contradict_gets_no_figure(section, words):
    """It printed the config's 8 bits and 10.00 bits per weight for 4-bit tensors."""
    infos = _infos(_mlx_module("a", 16, 256, 4, 64) | _mlx_module("b", 16, 256, 4, 64))
    summary = summarize(infos, _config(**section))
    assert summary.bits_per_weight is None
    assert words in summary.line()


def test_an_unreadable_config_is_said_so():
    infos = _infos(_mlx_module("a", 16, 256, 4, 64))
    summary = summarize(infos, None, config_error="c.json: key 'bits' must be an integer")
    assert summary.line() == (
        "quantized: 1 module; the quantization config can't be read: c.json: key 'bits' must "
        "be an integer"
    )


def test_gptq_and_awq_shapes_are_checked_their_own_way():
    gptq = {  # 256 inputs, 64 outputs, 4 bits, groups of 128
        "g.qweight": mx.zeros((32, 64), mx.int32),
        "g.qzeros": mx.zeros((2, 8), mx.int32),
        "g.scales": mx.zeros((2, 64), mx.float16),
    }
    awq = {  # 256 inputs, 64 outputs
        "a.qweight": mx.zeros((256, 8), mx.int32),
        "a.qzeros": mx.zeros((2, 8), mx.int32),
        "a.scales": mx.zeros((2, 64), mx.float16),
    }
    for tensors, method in ((gptq, "gptq"), (awq, "awq")):
        config = QuantizationConfig.from_model_config(
            {"quantization_config": {"quant_method": method, "bits": 4, "group_size": 128}}
        )
        summary = summarize(_infos(tensors), config)
        assert summary.problem is None, method
        stored = 8 * sum(a.nbytes for a in tensors.values())
        assert summary.bits_per_weight == stored / (256 * 64), method
