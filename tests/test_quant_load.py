"""load_quantized_weights on checkpoints written by mlx-lm, AWQ/GPTQ ones, and broken ones."""

from __future__ import annotations

import json
import os

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from bit_widths import ONE_BIT
from model_fixtures import tiny_llama_config

from mlxload.checkpoint import load
from mlxload.quant_config import QuantizationConfig
from mlxload.quant_errors import QuantizedCheckpointError, QuantizedWeightError, RepackError
from mlxload.quantized_load import load_quantized_weights
from mlxload.quantized_weight import QuantizedWeight

LLAMA = tiny_llama_config()
DOWN0 = "model.layers.0.mlp.down_proj"


def mlx_lm_checkpoint(path, bits, group_size, dtype):
    """A tiny llama quantized and saved by mlx-lm; layer 0's down_proj gets 8 bits, group 32."""
    from mlx_lm.models import llama
    from mlx_lm.utils import quantize_model, save_config, save_model

    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(LLAMA))
    model.set_dtype(dtype)

    def predicate(p, m):
        return {"bits": 8, "group_size": 32} if p == DOWN0 else True

    model, config = quantize_model(
        model, dict(LLAMA), group_size=group_size, bits=bits, quant_predicate=predicate
    )
    save_model(path, model)
    save_config(config, path / "config.json")
    return model


@pytest.mark.parametrize(
    ("bits", "group_size", "dtype"),
    [
        (4, 64, mx.float16),
        (3, 32, mx.bfloat16),
        (8, 128, mx.float32),
        (6, 64, mx.float16),
        pytest.param(1, 64, mx.bfloat16, marks=ONE_BIT),
    ],
)
def test_mlx_lm_checkpoint_round_trips(tmp_path, bits, group_size, dtype):
    model = mlx_lm_checkpoint(tmp_path, bits, group_size, dtype)
    weights = load_quantized_weights(tmp_path)

    modules = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))
    }
    assert set(weights) == set(modules) and len(weights) == 2 * 7 + 2
    for name, m in modules.items():
        qw = weights[name]
        assert qw.name == name
        assert (qw.bits, qw.group_size, qw.mode) == (m.bits, m.group_size, m.mode)
        assert (qw.bits, qw.group_size) == ((8, 32) if name == DOWN0 else (bits, group_size))
        for key in ("weight", "scales", "biases"):
            assert mx.array_equal(getattr(qw, key), m[key]).item(), (name, key)
        want = mx.dequantize(m.weight, m.scales, m.biases, group_size=m.group_size, bits=m.bits)
        got = qw.dequantize()
        assert got.dtype == dtype == qw.dtype and mx.array_equal(got, want).item()
    # the rebuilt layers compute what mlx-lm's do
    x = mx.random.normal((2, LLAMA["hidden_size"]), key=mx.random.key(7)).astype(dtype)
    q_proj = "model.layers.1.self_attn.q_proj"
    assert mx.array_equal(weights[q_proj].to_module()(x), modules[q_proj](x)).item()
    ids = mx.array([1, 5, 127])
    embed = weights["model.embed_tokens"].to_module()
    assert mx.array_equal(embed(ids), modules["model.embed_tokens"](ids)).item()


def write(path, tensors, config=None, name="model.safetensors"):
    path.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(path / name), tensors)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))


def affine(rows, cols, bits, group_size, seed=0):
    w = mx.random.normal((rows, cols), key=mx.random.key(seed)).astype(mx.float16)
    return mx.quantize(w, group_size=group_size, bits=bits)


def test_false_override_language_model_prefix_and_unquantized_tensors(tmp_path):
    tensors = {}
    for i, (bits, gs) in enumerate([(4, 64), (6, 32)]):
        w, s, b = affine(16, 128, bits, gs, seed=i)
        prefix = f"language_model.model.layers.{i}.proj"
        tensors |= {f"{prefix}.weight": w, f"{prefix}.scales": s, f"{prefix}.biases": b}
    tensors["language_model.lm_head.weight"] = mx.ones((8, 128), dtype=mx.float16)
    tensors["model.norm.weight"] = mx.ones((128,))
    config = {
        "quantization": {
            "bits": 4,
            "group_size": 64,
            "model.layers.1.proj": {"bits": 6, "group_size": 32},  # matched by prefix removal
            "language_model.lm_head": False,
        }
    }
    write(tmp_path, tensors, config)
    weights = load_quantized_weights(tmp_path)
    assert sorted(weights) == [
        "language_model.model.layers.0.proj",
        "language_model.model.layers.1.proj",
    ]
    assert weights["language_model.model.layers.1.proj"].spec.bits == 6
    ckpt = load(tmp_path)  # unquantized tensors stay reachable through the checkpoint
    assert ckpt["model.norm.weight"].shape == (128,)


def test_standalone_quantization_config_json_and_sharded_index(tmp_path):
    w0, s0, b0 = affine(32, 128, 2, 128, seed=1)
    w1, s1, b1 = affine(32, 256, 5, 32, seed=2)
    write(tmp_path, {"a.weight": w0, "a.scales": s0}, name="model-00001-of-00002.safetensors")
    write(
        tmp_path,
        {"a.biases": b0, "b.weight": w1, "b.scales": s1, "b.biases": b1},
        name="model-00002-of-00002.safetensors",
    )
    weight_map = {"a.weight": 1, "a.scales": 1, "a.biases": 2, "b.weight": 2}
    weight_map |= {"b.scales": 2, "b.biases": 2}
    index = {
        "metadata": {},
        "weight_map": {k: f"model-0000{v}-of-00002.safetensors" for k, v in weight_map.items()},
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "quantization_config.json").write_text(
        json.dumps(
            {
                "bits": 2,
                "group_size": 128,
                "per_tensor": {"b.weight": {"bits": 5, "group_size": 32}},
            }
        )
    )
    weights = load_quantized_weights(os.fspath(tmp_path))
    assert weights["a"].spec.bits == 2 and weights["b"].spec.bits == 5
    assert mx.array_equal(
        weights["b"].dequantize(), mx.dequantize(w1, s1, b1, group_size=32, bits=5)
    ).item()
    # an open checkpoint works too, and an explicit config overrides the directory's
    forced = QuantizationConfig.from_json(
        '{"bits": 2, "group_size": 128, "per_tensor": {"b": false}}'
    )
    with pytest.raises(QuantizedCheckpointError, match="marks module 'b' as not quantized"):
        load_quantized_weights(load(tmp_path), config=forced)


def test_a_consolidated_file_beside_the_model_is_not_read_as_a_duplicate(tmp_path):
    """mlx_lm.load and load_model read a directory's model*.safetensors only; this read every
    *.safetensors, and a Mistral-style consolidated.safetensors made a DuplicateTensorError."""
    w, s, b = affine(16, 128, 4, 64)
    tensors = {"m.proj.weight": w, "m.proj.scales": s, "m.proj.biases": b, "norm": mx.ones(4)}
    write(tmp_path, tensors, {"quantization": {"bits": 4, "group_size": 64}})
    write(tmp_path, {"norm": mx.ones(4)}, name="consolidated.safetensors")
    out = load_quantized_weights(tmp_path)
    assert list(out) == ["m.proj"] and mx.array_equal(out["m.proj"].weight, w).item()


def test_scales_without_packed_weight_names_the_tensor(tmp_path):
    w, s, b = affine(8, 64, 4, 64)
    write(
        tmp_path, {"x.weight": w, "x.scales": s, "x.biases": b, "y.scales": s}, {"quantization": {}}
    )
    with pytest.raises(QuantizedCheckpointError) as e:
        load_quantized_weights(tmp_path)
    assert str(e.value) == f"{tmp_path}: tensor 'y.scales' has no packed weight 'y.weight'"


def test_biases_without_scales_is_an_incomplete_module_not_a_float_layer(tmp_path):
    w, s, b = affine(8, 64, 4, 64)
    quantization = {"quantization": {"bits": 4, "group_size": 64}}
    write(tmp_path, {"x.weight": w, "x.scales": s, "x.biases": b, "m.weight": w, "m.biases": b},
          quantization)  # fmt: skip
    with pytest.raises(QuantizedCheckpointError) as e:
        load_quantized_weights(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: tensor 'm.biases' has no 'm.scales': the quantized module is incomplete "
        "(a shard or tensor is missing)"
    )


def test_packed_weight_without_config_names_the_tensor(tmp_path):
    w, s, b = affine(8, 64, 4, 64)
    write(tmp_path, {"x.weight": w, "x.scales": s, "x.biases": b}, {"model_type": "llama"})
    with pytest.raises(QuantizedCheckpointError) as e:
        load_quantized_weights(tmp_path)
    assert (
        f"{tmp_path}: tensor 'x.weight' (U32) has 'x.scales', so it is quantized, but the "
        "checkpoint has no quantization config" in str(e.value)
    )


def test_config_disagreeing_with_shapes_is_an_error_naming_config(tmp_path):
    w, s, b = affine(8, 128, 8, 128)
    write(
        tmp_path,
        {"x.weight": w, "x.scales": s, "x.biases": b},
        {"quantization": {"bits": 4, "group_size": 64}},
    )
    with pytest.raises(QuantizedWeightError) as e:
        load_quantized_weights(tmp_path)
    msg = str(e.value)
    assert "quantized weight 'x': scales shape (8, 1) != expected (8, 4)" in msg
    assert f"(bits=4, group_size=64, mode=affine from {tmp_path / 'config.json'})" in msg


def test_no_quantized_tensors_gives_empty_dict(tmp_path):
    write(tmp_path, {"w": mx.ones((2, 2))})
    assert load_quantized_weights(tmp_path) == {}


def test_foreign_layouts_are_refused(tmp_path):
    write(
        tmp_path,
        {"experts.gate_up_proj_blocks": mx.zeros((2, 16), mx.uint8)},
        {"quantization_config": {"quant_method": "mxfp4"}},
    )
    with pytest.raises(
        QuantizedCheckpointError,
        match=r"'experts\.gate_up_proj_blocks' is in the mxfp4 checkpoint layout",
    ):
        load_quantized_weights(tmp_path)


# ---------------------------------------------------------------- AWQ / GPTQ directories


def pack_along_inputs(values, bits):
    """GPTQ's qweight: each output column one little-endian stream along the inputs."""
    from mlxload.awq_gptq import pack_stream

    return pack_stream(values.T, bits).T.copy()


def test_autogptq_directory_three_bits(tmp_path):
    """quantize_config.json (AutoGPTQ), original format: stored zero = z - 1."""
    rng = np.random.default_rng(3)
    n_in, n_out, gs = 256, 32, 64
    q = rng.integers(0, 8, size=(n_in, n_out))
    zeros = rng.integers(1, 9, size=(n_in // gs, n_out))
    scales = (rng.choice([1, 3, 5, 7], size=zeros.shape) / 256).astype(np.float16)
    tensors = {
        "model.layers.0.self_attn.o_proj.qweight": mx.array(pack_along_inputs(q, 3).view(np.int32)),
        "model.layers.0.self_attn.o_proj.qzeros": mx.array(
            pack_along_inputs((zeros - 1).T, 3).T.copy().view(np.int32)
        ),
        "model.layers.0.self_attn.o_proj.scales": mx.array(scales),
        "model.layers.0.self_attn.o_proj.g_idx": mx.array((np.arange(n_in) // gs).astype(np.int32)),
    }
    write(tmp_path, tensors)
    (tmp_path / "quantize_config.json").write_text(
        json.dumps({"bits": 3, "group_size": gs, "desc_act": False, "sym": False})
    )
    qw = load_quantized_weights(tmp_path)["model.layers.0.self_attn.o_proj"]
    groups = np.arange(n_in) // gs
    want = ((q - zeros[groups]) * scales[groups].astype(np.float32)).T
    np.testing.assert_array_equal(np.array(qw.dequantize(mx.float32)), want)
    assert (qw.bits, qw.group_size, qw.dtype) == (3, 64, mx.float16)


def test_awq_directory_matches_mlx_lm_and_gptq_act_order_is_refused(tmp_path):
    from mlx_lm.utils import _transform_awq_weights

    rng = np.random.default_rng(5)
    qweight = (
        rng.integers(0, 2**32, size=(256, 8), dtype=np.uint64).astype(np.uint32).view(np.int32)
    )
    qzeros = rng.integers(0, 2**32, size=(2, 8), dtype=np.uint64).astype(np.uint32).view(np.int32)
    scales = rng.random((2, 64)).astype(np.float16)
    tensors = {
        "model.mlp.up_proj.qweight": mx.array(qweight),
        "model.mlp.up_proj.qzeros": mx.array(qzeros),
        "model.mlp.up_proj.scales": mx.array(scales),
        "model.mlp.up_proj.bias": mx.zeros((64,)),
    }
    config = {
        "quantization_config": {
            "quant_method": "awq",
            "bits": 4,
            "group_size": 128,
            "zero_point": True,
        }
    }
    write(tmp_path / "awq", tensors, config)
    weights = load_quantized_weights(tmp_path / "awq")
    theirs, _ = _transform_awq_weights(dict(tensors), {"bits": 4, "group_size": 128})
    qw = weights["model.mlp.up_proj"]
    assert isinstance(qw, QuantizedWeight) and qw.shape == (64, 256)
    for key in ("weight", "scales", "biases"):
        assert mx.array_equal(getattr(qw, key), theirs[f"model.mlp.up_proj.{key}"]).item()

    # missing qzeros while the config says asymmetric
    del tensors["model.mlp.up_proj.qzeros"]
    write(tmp_path / "awq2", tensors, config)
    with pytest.raises(
        QuantizedCheckpointError, match=r"tensor model\.mlp\.up_proj\.qzeros is missing"
    ):
        load_quantized_weights(tmp_path / "awq2")

    # GPTQ with act-order and a permuted g_idx
    g_idx = rng.permutation(np.arange(256) // 128).astype(np.int32)
    gptq = {
        "l.qweight": mx.zeros((32, 32), mx.int32),
        "l.scales": mx.ones((2, 32), mx.float16),
        "l.g_idx": mx.array(g_idx),
    }
    hf = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": True}
    write(tmp_path / "gptq", gptq, {"quantization_config": hf})
    with pytest.raises(RepackError, match="l: g_idx puts input"):
        load_quantized_weights(tmp_path / "gptq")

    # an orphaned qzeros
    gptq = {"l.qzeros": mx.zeros((2, 4), mx.int32)}
    write(tmp_path / "orphan", gptq, {"quantization_config": hf})
    with pytest.raises(
        QuantizedCheckpointError, match=r"tensor 'l\.qzeros' has no packed weight 'l\.qweight'"
    ):
        load_quantized_weights(tmp_path / "orphan")


def test_nvfp4_global_scales_load_with_their_experts(tmp_path):
    from test_quant_weight import nvfp4_with_global_scales

    w, s, gs = nvfp4_with_global_scales((4, 8, 64))
    experts = "model.layers.0.mlp.switch_mlp.up_proj"
    tensors = {f"{experts}.weight": w, f"{experts}.scales": s, f"{experts}.global_scale": gs}
    write(tmp_path, tensors, {"quantization": {"mode": "nvfp4", "bits": 4, "group_size": 16}})
    qw = load_quantized_weights(tmp_path)[experts]
    assert qw.mode == "nvfp4" and mx.array_equal(qw.global_scale, gs).item()
    want = mx.stack([
        mx.dequantize(w[e], s[e], group_size=16, bits=4, mode="nvfp4", global_scale=gs[e])
        for e in range(4)
    ])  # fmt: skip
    assert mx.array_equal(qw.dequantize(mx.float32), want).item()


def test_global_scale_without_scales_is_an_incomplete_module(tmp_path):
    from test_quant_weight import nvfp4_with_global_scales

    w, _, gs = nvfp4_with_global_scales((4, 8, 64))
    config = {"quantization": {"mode": "nvfp4", "bits": 4, "group_size": 16}}
    write(tmp_path, {"e.weight": w, "e.global_scale": gs}, config)
    with pytest.raises(QuantizedCheckpointError) as e:
        load_quantized_weights(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: tensor 'e.global_scale' has no 'e.scales': the quantized module is "
        "incomplete (a shard or tensor is missing)"
    )


@pytest.mark.parametrize(
    "config",
    [{"bits": 4, "group_size": 64}, {"quantization": {"bits": 4, "group_size": 64}}],
    ids=["section", "config.json"],
)
def test_config_may_be_given_as_a_dict(tmp_path, config):
    """A dict raised AttributeError: 'dict' object has no attribute 'quant_method'."""
    w, s, b = mx.quantize(mx.random.normal((8, 128), key=mx.random.key(0)), 64, 4)
    path = tmp_path / "q.safetensors"
    mx.save_safetensors(str(path), {"m.weight": w, "m.scales": s, "m.biases": b})
    with pytest.raises(QuantizedCheckpointError, match=r"or pass config= \(e\.g\."):
        load_quantized_weights(path)
    (q,) = load_quantized_weights(path, config=config).values()
    assert (q.bits, q.group_size) == (4, 64)
    assert mx.array_equal(q.dequantize(), mx.dequantize(w, s, b, 64, 4))
    with pytest.raises(
        TypeError, match=r"config= takes a QuantizationConfig, a parsed config\.json"
    ):
        load_quantized_weights(path, config=4)


def test_a_config_the_tensors_contradict_says_to_fix_it(tmp_path):
    w, s, b = mx.quantize(mx.random.normal((8, 128), key=mx.random.key(0)), 64, 4)
    path = tmp_path / "q.safetensors"
    mx.save_safetensors(str(path), {"m.weight": w, "m.scales": s, "m.biases": b})
    with pytest.raises(QuantizedWeightError) as e:
        load_quantized_weights(path, config={"bits": 8, "group_size": 64})
    assert "holds 64 8-bit values per row = 1 group of 64" in str(e.value)
    assert str(e.value).endswith(
        "(bits=8, group_size=64, mode=affine from the config= argument); if these tensors were "
        "quantized otherwise, fix the config (a per-module override may be missing), or pass "
        "config="
    )


def test_a_dict_config_is_read_as_what_it_is(tmp_path):
    """A Hugging Face section lost its quant_method (AWQ/GPTQ read as MLX); a config.json
    without a quantization section loaded as 4-bit/64 by default."""
    from mlxload.quant_errors import MissingQuantizationConfigError

    w, s, b = mx.quantize(mx.random.normal((8, 128), key=mx.random.key(0)), 64, 4)
    path = tmp_path / "q.safetensors"
    mx.save_safetensors(str(path), {"m.weight": w, "m.scales": s, "m.biases": b})
    for config in ({}, {"model_type": "llama", "hidden_size": 64}):
        with pytest.raises(MissingQuantizationConfigError):
            load_quantized_weights(path, config=config)
    with pytest.raises(QuantizedCheckpointError, match=r"has no packed weight 'm\.qweight'"):
        load_quantized_weights(path, config={"quant_method": "gptq", "bits": 4, "group_size": 64})
