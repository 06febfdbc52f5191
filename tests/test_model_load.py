"""load_model against the oracle mlx_lm.load (+ the same dtype conversion): same modules, same
greedy tokens, on synthetic checkpoints written in mlx-lm's format."""

from __future__ import annotations

import json
import re
import shutil

import mlx.core as mx
import mlx.nn as nn
import pytest
from bit_widths import ONE_BIT
from mlx.utils import tree_flatten
from model_fixtures import greedy, tiny_checkpoint, tiny_llama_config

mlx_lm = pytest.importorskip("mlx_lm")

import mlxload  # noqa: E402
from mlxload.backend import backend  # noqa: E402
from mlxload.model import ModelLoadError, load_model  # noqa: E402

PROMPT = "tell me a story about a small robot"


COMPUTE_DTYPE = mx.float32 if backend() == "cpu" else None
"""What load_model computes in here: float32 on MLX's CPU backend, as stored on GPUs."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def _oracle(path, dtype=COMPUTE_DTYPE):
    model, tokenizer = mlx_lm.load(str(path))
    if dtype is not None:
        model.set_dtype(dtype)
    return model, tokenizer


def _layers(model) -> dict[str, tuple]:
    return {
        name: (type(m).__name__, getattr(m, "bits", None), getattr(m, "group_size", None))
        for name, m in model.named_modules()
    }


def _assert_same_model(ours, theirs) -> None:
    assert _layers(ours) == _layers(theirs)
    a, b = dict(tree_flatten(ours.parameters())), dict(tree_flatten(theirs.parameters()))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert mx.array_equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "changes",
    [
        {"overrides": (("lm_head", 8),)},  # 4-bit with a per-module 8-bit override
        {"overrides": (("lm_head", None),)},  # an override that says "not quantized"
        {"bits": None},  # unquantized float16
        pytest.param({"bits": 1, "overrides": (("lm_head", 8),)}, marks=ONE_BIT),
    ],
    ids=["4bit-lm_head-8bit", "4bit-lm_head-float", "unquantized", "1bit-lm_head-8bit"],
)
def test_greedy_tokens_match_mlx_lm(cache, changes):
    path = tiny_checkpoint(cache, **changes)
    model, tokenizer, config = load_model(path)
    oracle, oracle_tok = _oracle(path)
    _assert_same_model(model, oracle)
    ids = tokenizer.encode(PROMPT)
    assert ids == oracle_tok.encode(PROMPT)
    tokens = greedy(model, ids)
    assert tokens == greedy(oracle, ids)
    assert len(set(tokens)) > 1  # a real sequence, not one token repeated
    assert config["model_type"] == "llama"


def test_override_builds_the_configured_layers(cache):
    model, _, _ = load_model(tiny_checkpoint(cache, overrides=(("lm_head", 8),)))
    assert isinstance(model.lm_head, nn.QuantizedLinear) and model.lm_head.bits == 8
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, nn.QuantizedLinear) and (q_proj.bits, q_proj.group_size) == (4, 64)
    plain, _, _ = load_model(tiny_checkpoint(cache, overrides=(("lm_head", None),)))
    assert type(plain.lm_head) is nn.Linear


def test_standalone_quantization_config_json(cache, tmp_path):
    """The same checkpoint with its overrides in quantization_config.json instead."""
    source = tiny_checkpoint(cache, overrides=(("lm_head", 8),))
    copy = tmp_path / "standalone"
    shutil.copytree(source, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["quantization"], config["quantization_config"]
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "quantization_config.json").write_text(
        json.dumps({"bits": 4, "group_size": 64, "per_tensor": {"lm_head.weight": {"bits": 8}}})
    )
    model, tokenizer, _ = load_model(copy)
    oracle, _ = _oracle(source)
    _assert_same_model(model, oracle)
    ids = tokenizer.encode(PROMPT)
    assert greedy(model, ids) == greedy(oracle, ids)


@pytest.mark.skipif(backend() != "cpu", reason="asserts the CPU backend's choices")
def test_dtype_choice_is_reported(cache):
    path = tiny_checkpoint(cache)
    model, _, _ = load_model(path)
    report = model.load_report
    assert (report.backend, report.compute_dtype, report.dtype_reason) == (
        "cpu",
        "float32",
        "cpu backend",
    )
    assert report.checkpoint_dtype == "float16"
    assert model.model.layers[0].self_attn.q_proj.scales.dtype == mx.float32
    assert report.zero_copy == "no" and report.paths == {"copy": 53}
    files = sorted(path.glob("model-*.safetensors"))
    assert report.bytes_read == sum(a.nbytes for f in files for a in mx.load(str(f)).values())
    assert report.quantized_modules == 16  # 14 linears + lm_head + embed_tokens
    assert all(t >= 0 for t in report.timings.values()) and report.timings["total"] > 0

    half, _, _ = load_model(path, dtype="float16")
    assert half.load_report.compute_dtype == "float16"
    assert half.load_report.dtype_reason == "argument"
    oracle, _ = _oracle(path, dtype=None)  # mlx_lm keeps float16
    _assert_same_model(half, oracle)


def test_bad_zero_copy_fails_before_a_hub_fetch(monkeypatch):
    """It was checked inside load(), after the Hub config and tokenizer were fetched."""
    from mlxload import model as model_mod

    def no_fetch(*args, **kwargs):
        raise AssertionError("fetched before checking the arguments")

    monkeypatch.setattr(model_mod, "_check_hub_model_first", no_fetch)
    with pytest.raises(mlxload.InvalidArgumentError, match="zero_copy"):
        load_model("hf://org/model", zero_copy="false")


def test_bad_dtype_fails_before_reading(tmp_path):
    with pytest.raises(mlxload.InvalidArgumentError) as info:
        load_model(tmp_path, dtype="float8")
    assert str(info.value) == (
        "dtype must be one of float16, bfloat16, float32 or None, got 'float8' (an unknown "
        "compute dtype)"
    )
    with pytest.raises(mlxload.InvalidArgumentError) as info:
        load_model(tmp_path, dtype=mx.int32)
    assert str(info.value) == (
        "dtype must be a float type (float16, bfloat16, float32) or None, got int32"
    )
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("kwargs", [{"lazy": True}, {"zero_copy": True}])
def test_lazy_or_zero_copy_with_a_group_is_refused(tmp_path, kwargs):
    with pytest.raises(mlxload.InvalidArgumentError) as info:
        load_model(tmp_path, tensor_group=object(), **kwargs)
    lazy, zero_copy = kwargs.get("lazy", False), kwargs.get("zero_copy", "auto")
    assert str(info.value) == (
        "with tensor_group/pipeline_group, lazy must be False and zero_copy 'auto' or False (a "
        f"rank copies just its blocks, evaluated), got lazy={lazy!r}, zero_copy={zero_copy!r}"
    )


def test_missing_config_json(cache, tmp_path):
    d = tmp_path / "noconfig"
    shutil.copytree(tiny_checkpoint(cache), d)
    (d / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"no config\.json; load_model needs an mlx-lm"):
        load_model(d)


def test_unknown_model_type(cache, tmp_path):
    d = tmp_path / "unknown"
    shutil.copytree(tiny_checkpoint(cache), d)
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "no_such_arch"
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="Model type no_such_arch not supported"):
        load_model(d)


def test_tensors_that_do_not_fit(cache, tmp_path):
    d = tmp_path / "extra"
    shutil.copytree(tiny_checkpoint(cache), d)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    mx.save_safetensors(str(d / "extra.safetensors"), {"model.stray.weight": mx.ones((2,))})
    index["weight_map"]["model.stray.weight"] = "extra.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value) == (
        f"{d}: 1 tensor(s) fit no parameter of the model: 'model.stray.weight' (in "
        "extra.safetensors); a file of another model or an adapter in the folder? does "
        "config.json describe these weights (model_type 'llama', num_hidden_layers, hidden_size, "
        "intermediate_size, tie_word_embeddings)?"
    )


def test_custom_model_code_is_refused(cache, tmp_path):
    d = tmp_path / "custom"
    shutil.copytree(tiny_checkpoint(cache), d)
    config = json.loads((d / "config.json").read_text())
    config["model_file"] = "evil.py"
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="'model_file' asks to run custom model code"):
        load_model(d)


def test_malformed_config_json_is_a_model_load_error(cache, tmp_path):
    path = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint(cache), path)
    (path / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ModelLoadError, match=r"config\.json: not valid JSON"):
        load_model(path)


def test_model_config_can_override_quantization(cache):
    """Overrides reach the quantization config too (as with mlx_lm.load's model_config)."""
    path = tiny_checkpoint(cache)
    quantization = json.loads((path / "config.json").read_text())["quantization"]
    override = {**quantization, "model.layers.0.mlp.up_proj": False}
    # The override says up_proj is float, but the checkpoint holds it quantized: if the
    # override is read, the tensors can't fit; if it were ignored, loading would succeed.
    with pytest.raises(ModelLoadError, match=r"fit no parameter of the model: \S+up_proj\.bias"):
        load_model(path, model_config={"quantization": override})


def test_a_tensor_name_in_the_quantization_section_is_ignored_as_mlx_lm_ignores_it(cache, tmp_path):
    """mlx-lm looks its "quantization" section up by module path only: keys naming a module's
    '.weight' (which mlxload read as overrides) made it refuse checkpoints mlx-lm loads."""
    copy = tmp_path / "suffixed"
    shutil.copytree(tiny_checkpoint(cache), copy)
    config = json.loads((copy / "config.json").read_text())
    for section in ("quantization", "quantization_config"):
        config[section]["model.layers.0.mlp.down_proj.weight"] = {"bits": 8, "group_size": 64}
        config[section]["model.layers.0.mlp.up_proj.weight"] = False
    (copy / "config.json").write_text(json.dumps(config))
    model, _, _ = load_model(copy)
    _assert_same_model(model, _oracle(copy)[0])
    weights = mlxload.load_quantized_weights(copy)
    assert weights["model.layers.0.mlp.down_proj"].bits == 4
    assert weights["model.layers.0.mlp.up_proj"].bits == 4


_TINY_LLAMA = tiny_llama_config(vocab_size=256)  # the tiny checkpoint's tokenizer


def _save_model_dir(cache, d, model, config: dict) -> None:
    """``model`` (unless None: its weights are written already) saved by mlx-lm into ``d``,
    with ``config`` as its config.json and the tiny checkpoint's tokenizer: a model directory
    both loaders read."""
    from mlx_lm import utils as mlx_lm_utils

    if model is not None:
        mlx_lm_utils.save_model(d, model)
    mlx_lm_utils.save_config(config, d / "config.json")
    for tokenizer_file in tiny_checkpoint(cache).glob("tokenizer*"):
        shutil.copy(tokenizer_file, d)


@pytest.mark.parametrize(
    ("mode", "bits", "group_size", "lm_head"),
    [
        ("mxfp4", None, None, ("affine", 8, 64)),  # qwen3_moe's predicate under --q-mode mxfp4
        ("affine", 4, 32, ("affine", 8, 64)),  # an override without group_size: 64, not 32
    ],
)
def test_override_without_mode_or_group_size_is_read_as_mlx_lm_reads_it(
    cache, tmp_path, mode, bits, group_size, lm_head
):
    """mlx-lm passes an override object to ``to_quantized(**override)``: what it leaves out
    is the mode's default, not the section's top-level value."""
    from mlx_lm import utils as mlx_lm_utils

    mx.random.seed(0)
    model_class, args_class = mlx_lm_utils._get_classes(_TINY_LLAMA)
    model = model_class(args_class.from_dict(_TINY_LLAMA))
    model.set_dtype(mx.float16)
    override = {"bits": 8} if mode == "affine" else {"group_size": 64, "bits": 8}
    model, config = mlx_lm_utils.quantize_model(
        model,
        dict(_TINY_LLAMA),
        group_size,
        bits,
        mode=mode,
        quant_predicate=lambda path, _: override if path == "lm_head" else True,
    )
    _save_model_dir(cache, tmp_path, model, config)
    assert config["quantization"]["lm_head"] == override  # the config holds what mlx-lm wrote

    theirs = mlx_lm.utils.load_model(tmp_path)[0]
    ours = load_model(tmp_path, dtype=mx.float16)[0]
    head = ours.lm_head
    assert (head.mode, head.bits, head.group_size) == lm_head
    _assert_same_model(ours, theirs)


def test_nvfp4_experts_with_a_global_scale_load_like_mlx_lm(cache, tmp_path):
    """mlx-lm's ``quantize_model(..., mode="nvfp4", global_scale=True)`` on a MoE model."""
    import inspect

    from mlx_lm import utils as mlx_lm_utils

    if "global_scale" not in inspect.signature(mlx_lm_utils.quantize_model).parameters:
        pytest.skip("this mlx-lm can't quantize with a global scale (mlx-lm 0.32 can)")

    config = {
        "model_type": "qwen3_moe",
        "hidden_size": 64,
        "num_hidden_layers": 1,
        "intermediate_size": 128,
        "moe_intermediate_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rms_norm_eps": 1e-6,
        "vocab_size": 256,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
        "max_position_embeddings": 512,
    }
    mx.random.seed(0)
    model_class, args_class = mlx_lm_utils._get_classes(config)
    model = model_class(args_class.from_dict(config))
    model.set_dtype(mx.float16)
    model, quantized = mlx_lm_utils.quantize_model(
        model, dict(config), None, None, mode="nvfp4", global_scale=True
    )
    _save_model_dir(cache, tmp_path, model, quantized)

    theirs = mlx_lm.utils.load_model(tmp_path)[0]
    ours = load_model(tmp_path, dtype=mx.float16)[0]
    experts = ours.model.layers[0].mlp.switch_mlp.gate_proj
    assert experts.mode == "nvfp4" and "global_scale" in experts
    _assert_same_model(ours, theirs)
    if mx.metal.is_available():  # MLX runs a global scale on the GPU only
        ids = mx.array([[1, 2, 3, 4]])
        assert mx.array_equal(ours(ids), theirs(ids)).item()


@pytest.fixture
def no_weight_reads(monkeypatch):
    """Fail the test if load_model gets as far as reading tensor bytes."""
    from mlxload.checkpoint import Checkpoint

    def refuse(self, names=None):
        pytest.fail("weights were read before the error was found")

    monkeypatch.setattr(Checkpoint, "materialize", refuse)


def _copy(cache, tmp_path, name: str):
    d = tmp_path / name
    shutil.copytree(tiny_checkpoint(cache), d)
    return d


def _edit_config(d, **changes) -> None:
    config = json.loads((d / "config.json").read_text())
    config.update(changes)
    (d / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v != "DROP"}))


def test_missing_tokenizer_files_fail_before_reading(cache, tmp_path, no_weight_reads):
    d = _copy(cache, tmp_path, "notok")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value) == (
        f"{d}: no tokenizer files (tokenizer.json, tokenizer.model, vocab.json, ...); "
        "copy them from the model's repository next to config.json"
    )


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_tokenizer_file_that_is_not_json_is_named(cache, tmp_path, no_weight_reads, name):
    d = _copy(cache, tmp_path, "badtok")
    (d / name).write_text("{")
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value) == (
        f"{d}/{name}: not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)); copy it again from the model's repository"
    )


def test_tokenizer_that_transformers_rejects_is_one_line(cache, tmp_path, no_weight_reads):
    d = _copy(cache, tmp_path, "oddtok")
    (d / "tokenizer.json").write_text('{"model": 3}')  # valid JSON, not a tokenizer
    with pytest.raises(ModelLoadError, match=r"the tokenizer failed to load \(") as e:
        load_model(d)
    assert str(e.value).startswith(f"{d}: ") and "\n" not in str(e.value)
    assert str(e.value).endswith(
        "check tokenizer.json and tokenizer_config.json against the model's repository"
    )


def test_config_without_a_needed_key_fails_before_reading(cache, tmp_path, no_weight_reads):
    d = _copy(cache, tmp_path, "nohidden")
    _edit_config(d, hidden_size="DROP")
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value) == (
        f"{d}/config.json: no 'hidden_size', which mlx-lm's 'llama' model needs; add it to "
        "config.json (or pass it in model_config)"
    )


def test_config_value_the_model_rejects_fails_before_reading(cache, tmp_path, no_weight_reads):
    d = _copy(cache, tmp_path, "nullhidden")
    _edit_config(d, hidden_size=None)
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    message = str(e.value)  # the TypeError's own words are mlx-lm's
    assert message.startswith(f"{d}/config.json: mlx-lm's 'llama' model can't be built from it")
    assert message.endswith("'NoneType'); fix that value in config.json") and "\n" not in message


def test_model_config_can_supply_a_missing_key(cache, tmp_path):
    d = _copy(cache, tmp_path, "supplied")
    hidden = json.loads((d / "config.json").read_text())["hidden_size"]
    _edit_config(d, hidden_size="DROP")
    model, _, config = load_model(d, model_config={"hidden_size": hidden})
    assert config["hidden_size"] == hidden and model.load_report.timings["tokenizer"] >= 0


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"vocab_size": -5}, "model can't be built from it"),
        ({"num_attention_heads": 0}, "model can't be built from it"),
        ({"rope_scaling": [1, 2]}, "model can't be built from it"),
        ({"model_type": "base"}, "model_type 'base' is not a model mlx-lm provides"),
    ],
)
def test_hostile_config_values_are_one_line_model_load_errors(cache, tmp_path, changes, words):
    d = _copy(cache, tmp_path, "hostile")
    _edit_config(d, **changes)
    with pytest.raises(ModelLoadError, match=words) as e:
        load_model(d)
    assert str(d / "config.json") in str(e.value) and "\n" not in str(e.value)


def test_a_path_to_config_json_loads_its_directory(cache):
    path = tiny_checkpoint(cache)
    model, _, config = load_model(path / "config.json")
    assert config["model_type"] == "llama" and model.load_report is not None


def test_a_hub_spec_ending_in_config_json_is_not_taken_for_a_directory():
    with pytest.raises(mlxload.MlxloadError, match="cannot be named here"):
        load_model("hf://org/repo/config.json")


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"num_hidden_layers": 10**7}, "num_hidden_layers"),
        ({"text_config": {"num_layers": 10**9}}, "text_config.num_layers"),
    ],
)
def test_a_layer_count_no_tensor_backs_fails_before_building(
    cache, tmp_path, no_weight_reads, changes, key
):
    # mlx-lm builds a Python module per layer (~0.5 ms each): 10**7 layers ran for hours.
    d = _copy(cache, tmp_path, "layers")
    _edit_config(d, **changes)
    value = changes.get("num_hidden_layers") or changes["text_config"]["num_layers"]
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value) == (
        f"{d}/config.json: {key} is {value}, but no tensor name in the checkpoint has a list "
        "index above 1, so it holds 2 layers at most; config.json belongs to another model or "
        "is corrupt"
    )


def test_a_layer_count_from_model_config_is_blamed_on_model_config(
    cache, tmp_path, no_weight_reads
):
    d = _copy(cache, tmp_path, "override")
    with pytest.raises(ModelLoadError) as e:
        load_model(d, model_config={"num_hidden_layers": 10**7})
    assert str(e.value).startswith("model_config: num_hidden_layers is 10000000, but no tensor")
    assert str(e.value).endswith("; model_config gives a wrong value")


def test_a_huge_number_in_a_tensor_name_is_no_layer_index(tmp_path):
    # int() of a 5,000-digit run raises ValueError on 3.11+ and is quadratic on 3.10.
    from mlxload.model_recipe import check_layer_counts

    names = ["a." + "9" * 5000 + ".b", "model.layers.0.mlp.w", "model.layers.1.mlp.w"]
    check_layer_counts({"num_hidden_layers": 2}, names, tmp_path)
    with pytest.raises(ModelLoadError, match="list index above 1, so it holds 2 layers"):
        check_layer_counts({"num_hidden_layers": 10**6}, names, tmp_path)
    # consecutive indices are each seen (experts.0.1 style names)
    with pytest.raises(ModelLoadError, match="list index above 7,"):
        check_layer_counts({"n_layer": 10**6}, ["x.3.7.w"], tmp_path)


def test_a_few_layers_too_many_is_still_the_missing_parameters_error(cache, tmp_path):
    d = _copy(cache, tmp_path, "fewmore")
    _edit_config(d, num_hidden_layers=3)
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value).startswith(
        f"{d}: the checkpoint lacks 9 tensor(s) the model needs: 'model.layers.2."
    )
    assert "and 4 more; is a shard missing? does config.json describe" in str(e.value)


def _rewrite_tensors(d, change) -> None:
    """Apply ``change(name, array) -> array`` to every tensor of every shard of ``d`` (``None``
    drops the tensor, from the index too)."""
    dropped = set()
    for shard in sorted(d.glob("*.safetensors")):
        tensors = {k: change(k, v) for k, v in mx.load(str(shard)).items()}
        dropped |= {k for k, v in tensors.items() if v is None}
        mx.save_safetensors(str(shard), {k: v for k, v in tensors.items() if v is not None})
    index = d / "model.safetensors.index.json"
    if dropped and index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {k: v for k, v in data["weight_map"].items() if k not in dropped}
        index.write_text(json.dumps(data))


UP = "model.layers.0.mlp.up_proj"


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        # more groups than the layer has inputs: the inferred group size was 0 and MLX divided
        # by it (SIGFPE: the process died)
        ("transposed", lambda k, v: v.T if k in (f"{UP}.scales", f"{UP}.biases") else v,
         "doesn't hold the layer's 64 inputs in whole bits and whole groups"),
        ("scalar", lambda k, v: v.reshape(-1)[0] if k == f"{UP}.scales" else v,
         "no per-group layout for a layer of 64 inputs"),
        ("float-packed", lambda k, v: v.astype(mx.float16) if k == f"{UP}.weight" else v,
         r"up_proj.weight' is float16 \(128, 8\), not packed uint32 words, yet '\S+scales"),
        # a float layer of the full shape beside scales read as "32 bits" before
        ("float-layer", lambda k, v: mx.zeros((v.shape[0], 64), mx.float16)
         if k == f"{UP}.weight" else v, "up_proj.weight' is float16 \\(128, 64\\), not packed"),
        ("no-weight", lambda k, v: None if k == f"{UP}.weight" else v,
         r"'\S+up_proj.scales' has no packed weight '\S+up_proj.weight'; the checkpoint is"),
    ],
    ids=lambda x: x if isinstance(x, str) and len(x) < 20 else "",
)  # fmt: skip
def test_inconsistent_quantized_tensors_are_our_error_not_a_crash(
    cache, tmp_path, kind, change, message
):
    d = _copy(cache, tmp_path, kind)
    _rewrite_tensors(d, change)
    with pytest.raises(mlxload.MlxloadError, match=message) as e:
        load_model(d)
    assert str(e.value).startswith(f"{d}: ") and "\n" not in str(e.value)


def test_one_bit_layers_under_an_mlx_without_them_are_refused_before_building(cache, monkeypatch):
    import mlxload.model_quant as model_quant

    path = tiny_checkpoint(cache, bits=1)
    monkeypatch.setattr(model_quant, "mlx_quantizes_bits", lambda bits: bits != 1)
    with pytest.raises(
        mlxload.QuantizedCheckpointError,
        match=rf"^{re.escape(str(path))}: tensor model\.\S+\.weight is 1-bit; MLX "
        r"\S+ has no 1-bit quantized layers \(they came with MLX 0\.32\.4\): pip install -U "
        "mlx, or read the weights with load_quantized_weights$",
    ):
        load_model(path)


@pytest.mark.parametrize("repacked", [True, False])
def test_per_expert_awq_gptq_tensors_get_a_hint(tmp_path, repacked):
    # The model's sanitize stacks the experts' weights into switch_mlp, not the scales/biases
    # repacked from AWQ/GPTQ; mlx_lm.load fails the same way, but the message should say why.
    from mlxload.model_fit import check_fit

    model = nn.Linear(4, 4)
    weights = dict(tree_flatten(model.parameters()))
    weights["model.layers.0.mlp.experts.3.up_proj.scales"] = mx.zeros((4, 1))
    with pytest.raises(ModelLoadError, match=r"1 tensor\(s\) fit no parameter") as e:
        check_fit(model, weights, tmp_path, {}, {}, repacked)
    hint = "AWQ/GPTQ mixture-of-experts checkpoints with per-expert tensors can't be built"
    assert (hint in str(e.value)) == repacked


DOWN = "model.layers.0.mlp.down_proj"  # stored 4-bit, groups of 64, 128 inputs


def _params(model) -> dict:
    return dict(tree_flatten(model.parameters()))


@pytest.mark.parametrize(
    ("override", "loads"),
    [({"bits": 8, "group_size": 32}, False), ({"bits": 4, "group_size": 64}, True), (False, False)],
    ids=["contradicts", "agrees", "not-quantized"],
)
def test_an_override_must_describe_the_stored_layer_as_mlx_lm_requires(
    cache, tmp_path, override, loads
):
    """8-bit groups of 32 fit down_proj's tensors on their own (64 inputs); the layer has 128,
    so only 4/64 does. mlx-lm refuses the contradiction; loading 4/64 anyway would ignore an
    override the user wrote."""
    from mlx_lm import load as mlx_lm_load

    d = _copy(cache, tmp_path, "override")
    _edit_config(d, quantization={"group_size": 64, "bits": 4, "mode": "affine", DOWN: override})
    if loads:
        model, _, _ = load_model(d, dtype=mx.float16)
        assert _params(model)[f"{DOWN}.weight"].shape == (64, 16)
        mlx_lm_load(str(d))
        return
    with pytest.raises(mlxload.MlxloadError) as e:
        load_model(d)
    if override:
        assert str(e.value) == (
            f"{d}: the quantization config ({d}/config.json) gives {DOWN!r} 8 bits, group size "
            "32, affine, but its stored tensors are 4 bits, group size 64, affine for the "
            "layer's inputs; fix the override in the config (or remove it)"
        )
    with pytest.raises(ValueError):  # mlx-lm refuses it too
        mlx_lm_load(str(d))


def test_a_wrong_default_is_read_from_the_shapes_as_mlx_lm_does(cache, tmp_path):
    """mlx-lm: the top-level default "can be wrong" for some modules; shapes decide them."""
    from mlx_lm import load as mlx_lm_load

    d = _copy(cache, tmp_path, "default")
    _edit_config(d, quantization={"group_size": 32, "bits": 8, "mode": "affine"})
    ours = _params(load_model(d, dtype=mx.float16)[0])
    theirs = _params(mlx_lm_load(str(d))[0])
    assert sorted(ours) == sorted(theirs)
    assert all(mx.array_equal(ours[k], theirs[k]).item() for k in theirs)
    assert ours[f"{DOWN}.weight"].shape == (64, 16)


def test_on_gpus_each_tensor_keeps_its_stored_dtype_as_in_mlx_lm(cache, tmp_path, monkeypatch):
    """bfloat16 matrices beside float32 norms (more tensors, fewer bytes): mlx-lm keeps both;
    casting all to one dtype rounded the norms, or doubled the matrices' memory."""
    from mlx_lm import utils as mlx_lm_utils

    import mlxload.backend

    mx.random.seed(0)
    model_class, args_class = mlx_lm_utils._get_classes(_TINY_LLAMA)
    model = model_class(args_class.from_dict(_TINY_LLAMA))
    model.load_weights(
        [
            (k, v if k.endswith("norm.weight") else v.astype(mx.bfloat16))
            for k, v in tree_flatten(model.parameters())
        ]
    )
    _save_model_dir(cache, tmp_path, model, dict(_TINY_LLAMA))
    monkeypatch.setattr(mlxload.backend, "backend", lambda: "cuda")  # a GPU's default

    ours = load_model(tmp_path)[0]
    report = ours.load_report
    assert (report.compute_dtype, report.checkpoint_dtype) == (None, "bfloat16")
    assert report.dtype_reason == "checkpoint"
    stored = {v.dtype for _, v in tree_flatten(ours.parameters())}
    assert stored == {mx.bfloat16, mx.float32}
    _assert_same_model(ours, mlx_lm.utils.load_model(tmp_path)[0])


_TINY_QWEN3_MOE = tiny_llama_config(
    model_type="qwen3_moe", vocab_size=256, head_dim=32, num_experts=4, num_experts_per_tok=2,
    decoder_sparse_step=1, mlp_only_layers=[], moe_intermediate_size=32, norm_topk_prob=True,
    max_position_embeddings=512,
)  # fmt: skip


def _save_hf_named_moe(cache, d) -> None:
    """A qwen3_moe checkpoint with per-expert tensors, as Hugging Face stores it: mlx-lm's
    sanitize stacks them into switch_mlp."""
    from mlx_lm import utils as mlx_lm_utils

    mx.random.seed(0)
    model_class, args_class = mlx_lm_utils._get_classes(_TINY_QWEN3_MOE)
    model = model_class(args_class.from_dict(_TINY_QWEN3_MOE))
    tensors = {}
    for name, value in tree_flatten(model.parameters()):
        if ".switch_mlp." in name:
            prefix, proj = name.split(".switch_mlp.")
            for e in range(value.shape[0]):
                tensors[f"{prefix}.experts.{e}.{proj}"] = value[e]
        else:
            tensors[name] = value
    d.mkdir()
    mx.save_safetensors(str(d / "model.safetensors"), tensors, metadata={"format": "pt"})
    _save_model_dir(cache, d, None, dict(_TINY_QWEN3_MOE))


def test_a_sanitize_that_fails_is_our_error_naming_the_tensor(cache, tmp_path):
    """mlx-lm's sanitize indexes every expert's tensor: a missing one was a bare KeyError."""
    from mlx_lm import load as mlx_lm_load

    d = tmp_path / "moe"
    _save_hf_named_moe(cache, d)
    ours = load_model(d, dtype=mx.float32)[0]
    _assert_same_model(ours, mlx_lm_load(str(d))[0])  # the complete checkpoint loads

    gone = "model.layers.1.mlp.experts.3.up_proj.weight"
    tensors = mx.load(str(d / "model.safetensors"))
    del tensors[gone]
    mx.save_safetensors(str(d / "model.safetensors"), tensors)
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value) == (
        f"{d}: mlx-lm's mlx_lm.models.qwen3_moe.sanitize failed on the checkpoint's tensors "
        f"(no tensor '{gone}'); the checkpoint is incomplete or isn't this architecture: does "
        "config.json describe these weights (num_hidden_layers, hidden_size, "
        "intermediate_size, tie_word_embeddings)?"
    )


def test_a_tensor_the_index_leaves_out_is_blamed_on_the_index(cache, tmp_path):
    d = _copy(cache, tmp_path, "stale")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shard = index["weight_map"].pop("model.norm.weight")
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value) == (
        f"{d}: the model needs 'model.norm.weight'; {shard} holds 'model.norm.weight' but the "
        "index doesn't list it: the index is stale (regenerate it, or remove it so that every "
        "shard is read)"
    )


def test_a_tensor_in_a_file_the_index_leaves_out_is_blamed_on_the_index(cache, tmp_path):
    """mlx-lm reads every model*.safetensors (no index): a file the index doesn't name was
    reported as 'is a shard missing?'."""
    d = _copy(cache, tmp_path, "unlisted")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shard = d / index["weight_map"].pop("model.norm.weight")
    tensors = mx.load(str(shard))
    mx.save_safetensors(
        str(d / "model-extra.safetensors"), {"model.norm.weight": tensors.pop("model.norm.weight")}
    )
    mx.save_safetensors(str(shard), tensors, metadata={"format": "mlx"})
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value) == (
        f"{d}: the model needs 'model.norm.weight'; model-extra.safetensors holds "
        "'model.norm.weight' but the index doesn't list it: the index is stale (regenerate it, "
        "or remove it so that every shard is read)"
    )


def test_a_tensor_the_model_doesnt_need_that_the_index_leaves_out_is_a_warning(cache, tmp_path):
    """mlx_lm.load (every model*.safetensors) refuses it; loading through the index said
    nothing at all."""
    d = _copy(cache, tmp_path, "extra")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shard = d / index["weight_map"]["model.norm.weight"]
    tensors = mx.load(str(shard))
    tensors["model.extra.weight"] = mx.ones((3,))
    mx.save_safetensors(str(shard), tensors, metadata={"format": "mlx"})
    with pytest.warns(UserWarning) as seen:
        load_model(d)
    (warning,) = [w for w in seen if "index doesn't list" in str(w.message)]
    assert warning.filename == __file__
    assert str(warning.message) == (
        f"{d}: the index doesn't list 1 tensor(s) its shards hold, e.g. 'model.extra.weight' in "
        f"{shard.name} (a stale index?); they were not read (mlx_lm.load reads every "
        "model*.safetensors and refuses tensors the model has no parameter for)"
    )


def test_raw_fp8_bytes_never_become_a_float_parameter(cache, tmp_path):
    """F8_E4M3 loads as its raw bytes; as a norm's weight, 1.0 would have become 56.0."""
    from st_bytes import entry, write_raw

    from mlxload.dtypes import dtype_for_mlx

    d = _copy(cache, tmp_path, "fp8norm")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shard = d / index["weight_map"]["model.norm.weight"]
    tensors = mx.load(str(shard))
    norm = mx.to_fp8(tensors.pop("model.norm.weight").astype(mx.float32))
    header, blobs, offset = {}, [], 0
    for name, value in [*tensors.items(), ("model.norm.weight", norm)]:
        data = bytes(memoryview(value))
        dtype = "F8_E4M3" if name == "model.norm.weight" else dtype_for_mlx(value.dtype).name
        header[name] = entry(dtype, list(value.shape), offset, offset + len(data))
        blobs.append(data)
        offset += len(data)
    write_raw(shard, header, b"".join(blobs))
    assert mlxload.load(d).info("model.norm.weight").dtype == "F8_E4M3"
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value).startswith(
        f"{d}: tensor 'model.norm.weight' is F8_E4M3, which MLX has no type for (mlxload reads "
        "it as raw bytes), and the model takes it as a float parameter"
    )


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])  # qwen2's sanitize pops lm_head
@pytest.mark.parametrize("same", [True, False])
def test_an_lm_head_that_tying_drops_is_a_warning_unless_a_copy(cache, tmp_path, same, model_type):
    """tie_word_embeddings makes mlx-lm's sanitize drop lm_head.weight without a word."""
    import warnings

    from mlx_lm import utils as mlx_lm_utils

    config = {**_TINY_LLAMA, "model_type": model_type}
    mx.random.seed(0)
    model_class, args_class = mlx_lm_utils._get_classes(config)
    model = model_class(args_class.from_dict(config))
    if same:
        model.lm_head.weight = model.model.embed_tokens.weight
    d = tmp_path / "tied"
    _save_model_dir(cache, d, model, {**config, "tie_word_embeddings": True})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(d)
    messages = [str(w.message) for w in caught if "lm_head" in str(w.message)]
    assert messages == ([] if same else [
        "config.json ties the output layer to the embeddings (tie_word_embeddings), so the "
        "checkpoint's own lm_head.weight, which differs from them, is ignored (as mlx-lm "
        "ignores it); set tie_word_embeddings to false if the model needs it"
    ])  # fmt: skip


@pytest.mark.parametrize("stray", ["adapters.safetensors", "consolidated.safetensors"])
def test_without_an_index_model_files_are_read_as_mlx_lm_reads_them(cache, tmp_path, stray):
    """mlx-lm globs model*.safetensors: an adapter or a consolidated copy beside the model's
    files is not part of it (mlxload.load still takes every *.safetensors, as documented)."""
    from mlx_lm import load as mlx_lm_load

    d = _copy(cache, tmp_path, "stray")
    (d / "model.safetensors.index.json").unlink()
    mx.save_safetensors(str(d / stray), {"layers.0.attention.wq.weight": mx.ones((4, 4))})
    ours = load_model(d, dtype=mx.float16)[0]
    _assert_same_model(ours, mlx_lm_load(str(d))[0])
    assert "layers.0.attention.wq.weight" in mlxload.load(d)


@pytest.mark.parametrize("value", [{"bits": 8, "group_size": 64}, False], ids=["spec", "false"])
def test_an_override_key_mlx_lm_never_reads_does_not_refuse_the_load(cache, tmp_path, value):
    """A leftover key under a language_model. prefix: mlx-lm looks up module paths exactly."""
    from mlx_lm import load as mlx_lm_load

    d = _copy(cache, tmp_path, "leftover")
    leftover = {f"language_model.{DOWN}": value}
    _edit_config(d, quantization={"group_size": 64, "bits": 4, "mode": "affine", **leftover})
    _assert_same_model(load_model(d, dtype=mx.float16)[0], mlx_lm_load(str(d))[0])
