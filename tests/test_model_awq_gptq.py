"""load_model on AutoAWQ / GPTQ checkpoints: repacked into MLX's layout on load.

Oracle for AWQ 4-bit: mlx_lm.load (which converts AWQ itself) + the same float32 conversion —
same modules, same parameters, same 20 greedy tokens. GPTQ at 3 bits (which mlx-lm can't
load) is checked against its own dequantization definition.
"""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest
from model_fixtures import greedy, tiny_checkpoint
from test_model_load import _assert_same_model
from test_quant_awq_gptq import awq_pack, dyadic_scales, gptq_pack_rows, gptq_pack_zeros

mlx_lm = pytest.importorskip("mlx_lm")

import mlxload  # noqa: E402
from mlxload.model import load_model  # noqa: E402

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip
GROUP = 64


@pytest.fixture(scope="module")
def float_checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("synthetic"), bits=None)


def _convert(src, dst, quant_config, make_layer):
    """Copy a float checkpoint, replacing each decoder Linear with ``make_layer``'s tensors."""
    shutil.copytree(src, dst)
    weights = {}
    for shard in sorted(dst.glob("*.safetensors")):
        weights.update(mx.load(str(shard)))
        shard.unlink()
    (dst / "model.safetensors.index.json").unlink()
    rng = np.random.default_rng(0)
    layers = sorted({".".join(k.split(".")[:3]) for k in weights if k.startswith("model.layers.")})
    for layer in layers:
        for linear in LINEARS:
            out_f, in_f = weights.pop(f"{layer}.{linear}.weight").shape
            for suffix, array in make_layer(rng, in_f, out_f).items():
                weights[f"{layer}.{linear}.{suffix}"] = mx.array(array)
    mx.save_safetensors(str(dst / "model.safetensors"), weights)
    config = json.loads((dst / "config.json").read_text())
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    config["quantization_config"] = quant_config
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _awq_layer(rng, in_f, out_f):
    q = rng.integers(0, 16, size=(in_f, out_f))
    zeros = rng.integers(0, 16, size=(in_f // GROUP, out_f))
    return {
        "qweight": awq_pack(q),
        "qzeros": awq_pack(zeros),
        "scales": dyadic_scales((in_f // GROUP, out_f)) / 64,
    }


def test_awq_model_matches_mlx_lm(float_checkpoint, tmp_path):
    path = _convert(
        float_checkpoint,
        tmp_path / "awq",
        {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True},
        _awq_layer,
    )
    ours, tokenizer, _ = load_model(path, dtype="float32")
    theirs, _ = mlx_lm.load(str(path))
    theirs.set_dtype(mx.float32)
    _assert_same_model(ours, theirs)
    q = ours.model.layers[0].mlp.down_proj
    assert (type(q).__name__, q.bits, q.group_size) == ("QuantizedLinear", 4, GROUP)
    ids = tokenizer.encode("tell me a story")
    assert greedy(ours, ids) == greedy(theirs, ids)


def test_awq_model_on_a_gpu_takes_the_scales_dtype_as_mlx_lm_does(
    float_checkpoint, tmp_path, monkeypatch
):
    """With no dtype asked, a GPU keeps each tensor as stored, as mlx-lm does; but mlx-lm's AWQ
    conversion casts every float tensor to the scales' dtype (float32 scales here, float16
    norms and embeddings): different parameters and logits, before."""

    def float32_scales(rng, in_f, out_f):
        layer = _awq_layer(rng, in_f, out_f)
        return {**layer, "scales": layer["scales"].astype(np.float32)}

    path = _convert(
        float_checkpoint,
        tmp_path / "awq",
        {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True},
        float32_scales,
    )
    monkeypatch.setattr(mlxload.backend, "backend", lambda: "cuda")  # a GPU's default
    ours, _, _ = load_model(path)
    theirs, _ = mlx_lm.load(str(path))
    assert ours.model.norm.weight.dtype == mx.float32
    _assert_same_model(ours, theirs)
    assert ours.load_report.compute_dtype == "float32"


@pytest.mark.parametrize(
    ("format_fields", "stored_offset"),
    [
        ({}, -1),  # original GPTQ stores zero - 1
        ({"format": "gptq_v2"}, 0),  # GPTQModel's v2, named by the key it and transformers read
        ({"checkpoint_format": "gptq_v2"}, 0),  # ... or by the older key
    ],
)
def test_gptq_three_bit_model_loads_exactly(
    float_checkpoint, tmp_path, format_fields, stored_offset
):
    """mlx-lm's converter only takes 4 bits; mlxload repacks 3-bit GPTQ exactly."""
    saved = {}

    def gptq_layer(rng, in_f, out_f):
        q = rng.integers(0, 8, size=(in_f, out_f))
        zeros = rng.integers(1, 8, size=(in_f // GROUP, out_f))  # stored as 0-6 or 1-7
        scales = dyadic_scales((in_f // GROUP, out_f)) / 64
        saved[len(saved)] = (q, zeros, scales)
        return {
            "qweight": gptq_pack_rows(q, 3),
            "qzeros": gptq_pack_zeros(zeros + stored_offset, 3),
            "scales": scales,
            "g_idx": (np.arange(in_f) // GROUP).astype(np.int32),
        }

    path = _convert(
        float_checkpoint,
        tmp_path / "gptq",
        {"quant_method": "gptq", "bits": 3, "group_size": GROUP, "sym": False, **format_fields},
        gptq_layer,
    )
    model, _, _ = load_model(path, dtype="float32")
    modules = dict(model.named_modules())
    prefixes = sorted(f"model.layers.{i}" for i in range(len(model.model.layers)))
    converted = [
        f"{prefix}.{linear}" for prefix in prefixes for linear in LINEARS
    ]  # _convert's order
    assert len(converted) == len(saved)
    for k, name in enumerate(converted):  # every module holds its own definition's values
        layer = modules[name]
        assert (layer.bits, layer.group_size) == (3, GROUP), name
        q, zeros, scales = saved[k]
        groups = np.arange(q.shape[0]) // GROUP
        want = ((q - zeros[groups]) * scales[groups].astype(np.float32)).T
        got = mx.dequantize(layer.weight, layer.scales, layer.biases, GROUP, 3)
        np.testing.assert_array_equal(np.array(got), want, err_msg=name)
    logits = model(mx.array([[1, 2, 3]]))
    assert bool(mx.all(mx.isfinite(logits)))


@pytest.mark.parametrize("scales_dtype", [np.float16, "bfloat16"])
def test_float32_loads_of_gptq_are_exact_with_any_scales(float_checkpoint, tmp_path, scales_dtype):
    """The bias -z*s was rounded to the scales' dtype before the float32 conversion: 8-bit
    weights were off by up to 0.1 of a quantization step, though (q - z) * s fits float32."""
    saved = []

    def gptq8(rng, in_f, out_f):
        q = rng.integers(0, 256, size=(in_f, out_f))
        zeros = rng.integers(0, 255, size=(in_f // GROUP, out_f))  # stored as zero - 1
        scales = mx.array(rng.uniform(1e-3, 2e-2, (in_f // GROUP, out_f)).astype(np.float32))
        scales = scales.astype(mx.float16 if scales_dtype is np.float16 else mx.bfloat16)
        saved.append((q, zeros + 1, np.array(scales.astype(mx.float32))))
        return {
            "qweight": gptq_pack_rows(q, 8),
            "qzeros": gptq_pack_zeros(zeros, 8),
            "scales": scales,
        }

    path = _convert(
        float_checkpoint,
        tmp_path / "gptq8",
        {"quant_method": "gptq", "bits": 8, "group_size": GROUP, "sym": False},
        gptq8,
    )
    model, _, _ = load_model(path, dtype="float32")
    modules = dict(model.named_modules())
    layers = sorted(f"model.layers.{i}" for i in range(len(model.model.layers)))  # _convert's
    names = [f"{prefix}.{linear}" for prefix in layers for linear in LINEARS]
    for name, (q, zeros, scales) in zip(names, saved, strict=True):
        layer = modules[name]
        groups = np.arange(q.shape[0]) // GROUP
        want = ((q - zeros[groups]).astype(np.float64) * scales[groups]).T
        got = mx.dequantize(layer.weight, layer.scales, layer.biases, GROUP, 8)
        assert got.dtype == mx.float32
        np.testing.assert_array_equal(np.array(got).astype(np.float64), want, err_msg=name)


# GPTQModel's per-module rules: o_proj left float, down_proj at 8 bits in groups of 32, the
# rest at the section's 4 bits in groups of 64. The first matching rule decides.
DYNAMIC = {
    r"-:.*\.self_attn\.o_proj$": {},
    r"+:.*\.mlp\.down_proj$": {"bits": 8, "group_size": 32, "sym": False},
    r".*\.mlp\.": {"bits": 2},  # never reached for down_proj: the rule above matched first
}


def _dynamic_gptq(float_checkpoint, dst):
    """A GPTQModel checkpoint with :data:`DYNAMIC`; returns it and each module's definition."""
    names = iter(f"model.layers.{i}.{linear}" for i in range(64) for linear in LINEARS)
    saved = {}

    def layer(rng, in_f, out_f):
        name = next(names)
        if name.endswith("o_proj"):
            return {"weight": rng.standard_normal((out_f, in_f)).astype(np.float32)}
        bits, group = (4, 64)
        if ".mlp." in name:
            bits, group = (8, 32) if name.endswith("down_proj") else (2, 64)
        q = rng.integers(0, 2**bits, size=(in_f, out_f))
        zeros = rng.integers(1, 2**bits, size=(in_f // group, out_f))
        scales = dyadic_scales((in_f // group, out_f)) / 64
        saved[name] = (bits, group, q, zeros, scales)
        return {
            "qweight": gptq_pack_rows(q, bits),
            "qzeros": gptq_pack_zeros(zeros - 1, bits),
            "scales": scales,
            "g_idx": (np.arange(in_f) // group).astype(np.int32),
        }

    config = {"quant_method": "gptq", "bits": 4, "group_size": 64, "sym": False}
    return _convert(float_checkpoint, dst, {**config, "dynamic": DYNAMIC}, layer), saved


def _definition(q, zeros, scales, group):
    groups = np.arange(q.shape[0]) // group
    return ((q - zeros[groups]) * scales[groups].astype(np.float32)).T


def test_gptqmodel_dynamic_rules_give_each_module_its_bits(float_checkpoint, tmp_path):
    path, saved = _dynamic_gptq(float_checkpoint, tmp_path / "dynamic")
    model, _, _ = load_model(path, dtype="float32")
    modules = dict(model.named_modules())
    assert type(modules["model.layers.0.self_attn.o_proj"]).__name__ == "Linear"
    assert {(b, g) for b, g, *_ in saved.values()} == {(4, 64), (8, 32), (2, 64)}
    for name, (bits, group, q, zeros, scales) in saved.items():
        layer = modules[name]
        assert (layer.bits, layer.group_size) == (bits, group), name
        got = mx.dequantize(layer.weight, layer.scales, layer.biases, group, bits)
        np.testing.assert_array_equal(np.array(got), _definition(q, zeros, scales, group), name)
    weights = mlxload.load_quantized_weights(path)  # the same rules without the model
    assert set(weights) == set(saved)
    for name, (bits, group, *_) in saved.items():
        assert (weights[name].bits, weights[name].group_size) == (bits, group), name


def test_a_packed_module_a_dynamic_rule_leaves_float_is_named(float_checkpoint, tmp_path):
    path, _ = _dynamic_gptq(float_checkpoint, tmp_path / "dynamic")
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"]["dynamic"] = {r"-:.*\.mlp\.up_proj$": {}, **DYNAMIC}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(mlxload.QuantizedCheckpointError) as e:
        load_model(path)
    assert str(e.value) == (
        f"{path}: tensor model.layers.0.mlp.up_proj.qweight exists but a '-:' rule of the "
        f"'dynamic' section in {path / 'config.json'} marks module "
        "'model.layers.0.mlp.up_proj' as not quantized"
    )


def test_dynamic_rules_match_checkpoint_names_not_the_models_own_paths(float_checkpoint, tmp_path):
    """qwen2_vl's model keeps the text model under language_model.*; GPTQModel's rules were
    written against the checkpoint's model.layers.* names, so that is what they match."""
    pytest.importorskip("mlx_lm.models.qwen2_vl")

    def gptq_layer_with_bias(rng, in_f, out_f):
        layer = _gptq4(rng, in_f, out_f)
        layer["bias"] = np.zeros(out_f, np.float16)  # qwen2 has q/k/v biases; zeros everywhere
        return layer

    rules = {r"+:model\.layers\.": {}, "-:.*": {}}  # quantized: exactly the decoder layers
    config = {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "sym": False}
    path = _convert(
        float_checkpoint, tmp_path / "vl", {**config, "dynamic": rules}, gptq_layer_with_bias
    )
    for linear in ("self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
        _drop_bias(path, linear)
    model_config = json.loads((path / "config.json").read_text())
    model_config |= {"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"]}
    (path / "config.json").write_text(json.dumps(model_config))
    model, _, _ = load_model(path, dtype="float32")
    modules = dict(model.named_modules())
    layer = modules["language_model.model.layers.0.mlp.down_proj"]
    assert (type(layer).__name__, layer.bits) == ("QuantizedLinear", 4)
    assert model.load_report.quantized_modules == len(LINEARS) * model_config["num_hidden_layers"]


def _gptq4(rng, in_f, out_f):
    q = rng.integers(0, 16, size=(in_f, out_f))
    zeros = rng.integers(1, 16, size=(in_f // GROUP, out_f))
    return {
        "qweight": gptq_pack_rows(q, 4),
        "qzeros": gptq_pack_zeros(zeros - 1, 4),
        "scales": dyadic_scales((in_f // GROUP, out_f)) / 64,
        "g_idx": (np.arange(in_f) // GROUP).astype(np.int32),
    }


def _drop_bias(path, linear):
    weights = mx.load(str(path / "model.safetensors"))
    weights = {k: v for k, v in weights.items() if not k.endswith(f"{linear}.bias")}
    mx.save_safetensors(str(path / "model.safetensors"), weights)
