"""QuantizationConfig: every format, per-module overrides, matching order, errors and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlxload.errors import MlxloadError
from mlxload.quant_config import QuantizationConfig, QuantSpec, find_quantization_config
from mlxload.quant_errors import (
    MissingQuantizationConfigError,
    QuantConfigJSONError,
    QuantConfigNotFoundError,
    QuantConfigTypeError,
    QuantizationConfigError,
    UnsupportedBitsError,
    UnsupportedGroupSizeError,
    UnsupportedQuantMethodError,
)

V_PROJ = "model.layers.0.self_attn.v_proj"

# ---------------------------------------------------------------- standalone file


def test_standalone_defaults_are_4_bits_group_64():
    cfg = QuantizationConfig.from_json("{}")
    assert (cfg.bits, cfg.group_size, cfg.mode, cfg.per_tensor) == (4, 64, "affine", {})
    assert cfg.for_tensor("anything.weight") == QuantSpec(4, 64, "affine")


def test_standalone_per_tensor_overrides_and_false():
    cfg = QuantizationConfig.from_json(
        json.dumps(
            {
                "bits": 4,
                "group_size": 64,
                "per_tensor": {
                    f"{V_PROJ}.weight": {"bits": 6, "group_size": 128},
                    "model.embed_tokens.weight": {"bits": 8, "group_size": 32},
                    "lm_head": False,
                    "model.norm": {"bits": 8},  # group size inherited from the default
                },
            }
        )
    )
    assert cfg.for_tensor(f"{V_PROJ}.weight") == QuantSpec(6, 128)
    assert cfg.for_tensor("model.embed_tokens.weight") == QuantSpec(8, 32)
    assert cfg.for_tensor("lm_head.weight") is None
    assert cfg.for_tensor("model.norm.scales") == QuantSpec(8, 64)
    assert cfg.for_tensor("model.layers.5.mlp.gate_proj.weight") == QuantSpec(4, 64)


_FROM_FILE_INSTEAD = (
    "pass the path of a quantization_config.json, or use find_quantization_config(directory) "
    "to look in a checkpoint directory"
)
_FROM_MODEL_CONFIG_INSTEAD = (
    "pass a model's config.json, the directory that holds it, or the parsed config (a dict)"
)


def test_from_file_of_a_missing_file_or_a_directory_is_a_quantization_config_error(tmp_path):
    """They leaked FileNotFoundError / IsADirectoryError, which 'except MlxloadError' missed."""
    missing = tmp_path / "quantization_config.json"
    with pytest.raises(QuantConfigNotFoundError) as info:
        QuantizationConfig.from_file(missing)
    assert str(info.value) == f"{missing}: no such file; {_FROM_FILE_INSTEAD}"
    assert isinstance(info.value, FileNotFoundError) and info.value.filename == str(missing)
    with pytest.raises(QuantConfigNotFoundError) as info:
        QuantizationConfig.from_file(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: a directory, not a quantization config file; {_FROM_FILE_INSTEAD}"
    )
    assert isinstance(info.value, QuantizationConfigError)


def test_from_file_under_a_file_or_unreadable_is_a_quantization_config_error(tmp_path):
    """A NotADirectoryError or PermissionError leaked past 'except MlxloadError'."""
    (tmp_path / "file.json").write_text("{}")
    under = tmp_path / "file.json" / "x"
    with pytest.raises(QuantConfigNotFoundError, match=r"file\.json/x: no such file"):
        QuantizationConfig.from_file(under)
    unreadable = tmp_path / "quantization_config.json"
    unreadable.write_text("{}")
    real = Path.read_bytes

    def refuse(self):
        if self == unreadable:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "read_bytes", refuse)
        with pytest.raises(QuantizationConfigError, match="can't read it: Permission denied"):
            QuantizationConfig.from_file(unreadable)


def test_from_model_config_of_a_missing_file_or_a_directory_is_a_quantization_config_error(
    tmp_path,
):
    config = tmp_path / "config.json"
    for given in (tmp_path, config):  # a directory without config.json, or the file itself
        with pytest.raises(QuantConfigNotFoundError) as info:
            QuantizationConfig.from_model_config(given)
        assert str(info.value) == f"{config}: no such file; {_FROM_MODEL_CONFIG_INSTEAD}"
        assert isinstance(info.value, MlxloadError)
    config.mkdir()
    with pytest.raises(QuantConfigNotFoundError) as info:
        QuantizationConfig.from_model_config(tmp_path)
    assert str(info.value) == (
        f"{config}: a directory, not a model config file; {_FROM_MODEL_CONFIG_INSTEAD}"
    )


def test_from_file_reads_and_names_the_file(tmp_path):
    path = tmp_path / "quantization_config.json"
    path.write_text('{"bits": 3, "group_size": 32}')
    cfg = QuantizationConfig.from_file(path)
    assert cfg.default == QuantSpec(3, 32) and cfg.source == str(path)
    path.write_text('{"bits": 7}')
    with pytest.raises(UnsupportedBitsError) as e:
        QuantizationConfig.from_file(path)
    assert str(e.value) == (
        f"{path}: key 'bits' is 7; affine quantization supports bits 1, 2, 3, 4, 5, 6, 8"
    )


# ---------------------------------------------------------------- matching order


@pytest.mark.parametrize(
    ("override", "query"),
    [
        (f"{V_PROJ}.weight", f"{V_PROJ}.weight"),  # exact
        (V_PROJ, f"{V_PROJ}.weight"),  # suffix removed
        (V_PROJ, f"{V_PROJ}.scales"),
        (V_PROJ, f"{V_PROJ}.biases"),
        (V_PROJ, V_PROJ),  # module path queried directly
        (V_PROJ, f"language_model.{V_PROJ}.weight"),  # prefix removed, then suffix
        (f"{V_PROJ}.weight", f"language_model.{V_PROJ}.weight"),  # prefix removed, exact
        (f"language_model.{V_PROJ}", f"{V_PROJ}.weight"),  # prefix added, then suffix
        (f"language_model.{V_PROJ}.weight", f"{V_PROJ}.weight"),  # prefix added, exact
        (f"language_model.{V_PROJ}", f"language_model.{V_PROJ}.scales"),
    ],
)
def test_matching_rules(override, query):
    cfg = QuantizationConfig.from_json(json.dumps({"per_tensor": {override: {"bits": 6}}}))
    assert cfg.for_tensor(query) == QuantSpec(6, 64)


def test_matching_prefers_earlier_rules():
    per_tensor = {
        f"{V_PROJ}.weight": {"bits": 2},
        V_PROJ: {"bits": 3},
        f"language_model.{V_PROJ}": {"bits": 5},
    }
    cfg = QuantizationConfig.from_json(json.dumps({"per_tensor": per_tensor}))
    assert cfg.for_tensor(f"{V_PROJ}.weight").bits == 2  # exact beats suffix-stripped
    assert cfg.for_tensor(f"{V_PROJ}.scales").bits == 3  # suffix-stripped beats prefix-added
    assert cfg.for_tensor(f"language_model.{V_PROJ}.scales").bits == 5  # exact base wins
    assert cfg.for_tensor(f"language_model.{V_PROJ}.weight").bits == 5


def test_other_suffixes_and_partial_names_do_not_match():
    cfg = QuantizationConfig.from_json(json.dumps({"per_tensor": {V_PROJ: {"bits": 8}}}))
    assert cfg.for_tensor(f"{V_PROJ}.bias") == QuantSpec(4, 64)
    assert cfg.for_tensor("self_attn.v_proj.weight") == QuantSpec(4, 64)
    assert cfg.for_tensor(f"vision.{V_PROJ}.weight") == QuantSpec(4, 64)


# ---------------------------------------------------------------- mlx-lm config.json


def test_mlx_lm_section_with_object_and_false_overrides():
    cfg = QuantizationConfig.from_model_config(
        {
            "model_type": "gemma3",
            "quantization": {
                "group_size": 64,
                "bits": 4,
                "mode": "affine",
                "language_model.model.layers.0.mlp.down_proj": {"bits": 8, "group_size": 64},
                "language_model.model.layers.0.self_attn.v_proj": {"bits": 6, "group_size": 32},
                "language_model.lm_head": False,
            },
        }
    )
    assert cfg.quant_method is None
    assert cfg.for_tensor("language_model.model.layers.0.mlp.down_proj.weight") == QuantSpec(8, 64)
    assert cfg.for_tensor("model.layers.0.self_attn.v_proj.scales") == QuantSpec(6, 32)
    assert cfg.for_tensor("lm_head.weight") is None
    assert cfg.for_tensor("language_model.model.layers.5.mlp.gate_proj") == QuantSpec(4, 64)
    assert len(cfg.per_tensor) == 3


def test_mlx_lm_copy_under_quantization_config_and_text_config(tmp_path):
    mlx_copy = {"quantization_config": {"bits": 8, "group_size": 32, "lm_head": False}}
    cfg = QuantizationConfig.from_model_config(mlx_copy)
    assert cfg.default == QuantSpec(8, 32) and cfg.for_tensor("lm_head") is None
    (tmp_path / "config.json").write_text(json.dumps({"text_config": mlx_copy}))
    # a directory or the file itself
    assert QuantizationConfig.from_model_config(tmp_path).default == QuantSpec(8, 32)
    assert QuantizationConfig.from_model_config(tmp_path / "config.json").source == str(
        tmp_path / "config.json"
    )


@pytest.mark.parametrize(
    ("section", "spec"),
    [
        ({"mode": "mxfp4"}, QuantSpec(4, 32, "mxfp4")),
        ({"mode": "nvfp4"}, QuantSpec(4, 16, "nvfp4")),
        ({"mode": "mxfp8", "bits": 8, "group_size": 32}, QuantSpec(8, 32, "mxfp8")),
        ({"bits": 2, "group_size": 128}, QuantSpec(2, 128, "affine")),
        ({}, QuantSpec(4, 64, "affine")),
    ],
)
def test_mlx_lm_modes_and_their_defaults(section, spec):
    assert QuantizationConfig.from_model_config({"quantization": section}).default == spec


def test_mlx_lm_override_with_another_mode_takes_that_modes_defaults():
    cfg = QuantizationConfig.from_model_config(
        {"quantization": {"bits": 4, "group_size": 128, "experts": {"mode": "mxfp4"}}}
    )
    assert cfg.for_tensor("experts.weight") == QuantSpec(4, 32, "mxfp4")


@pytest.mark.parametrize(
    ("section", "spec"),
    [
        ({"bits": 4, "group_size": 32, "lm_head": {"bits": 8}}, QuantSpec(8, 64, "affine")),
        (
            {
                "bits": 4,
                "group_size": 32,
                "mode": "mxfp4",
                "lm_head": {"group_size": 64, "bits": 8},
            },
            QuantSpec(8, 64, "affine"),
        ),
        ({"bits": 4, "group_size": 32, "mode": "mxfp4", "lm_head": {}}, None),  # falsy: float
        ({"bits": 8, "group_size": 32, "lm_head": True}, QuantSpec(8, 32, "affine")),
    ],
)
def test_mlx_lm_override_leaves_out_what_to_quantized_defaults(section, spec):
    """An mlx-lm override object goes to ``to_quantized(**override)`` as it is."""
    cfg = QuantizationConfig.from_model_config({"quantization": section})
    assert cfg.for_tensor("lm_head.weight") == spec


def test_missing_section_is_an_error_naming_the_keys():
    with pytest.raises(MissingQuantizationConfigError) as e:
        QuantizationConfig.from_model_config({"model_type": "llama"}, source="m/config.json")
    assert "m/config.json: no quantization section" in str(e.value)
    assert "'quantization'" in str(e.value) and "'quantization_config'" in str(e.value)


# ---------------------------------------------------------------- Hugging Face sections


def test_hf_awq():
    cfg = QuantizationConfig.from_model_config(
        {
            "quantization_config": {
                "quant_method": "awq",
                "bits": 4,
                "group_size": 128,
                "zero_point": True,
                "version": "gemm",
            }
        }
    )
    assert (cfg.quant_method, cfg.bits, cfg.group_size, cfg.zero_point) == ("awq", 4, 128, True)
    assert cfg.for_tensor("model.layers.0.mlp.up_proj") == QuantSpec(4, 128)


def test_hf_gptq_under_text_config():
    cfg = QuantizationConfig.from_model_config(
        {
            "text_config": {
                "quantization_config": {
                    "quant_method": "gptq",
                    "bits": 3,
                    "group_size": -1,
                    "sym": False,
                    "desc_act": True,
                    "checkpoint_format": "gptq_v2",
                }
            }
        }
    )
    assert (cfg.quant_method, cfg.bits, cfg.group_size) == ("gptq", 3, -1)
    assert (cfg.sym, cfg.desc_act, cfg.checkpoint_format) == (False, True, "gptq_v2")


def test_hf_mxfp4_and_compressed_tensors():
    mx4 = QuantizationConfig.from_model_config({"quantization_config": {"quant_method": "mxfp4"}})
    assert (mx4.quant_method, mx4.default) == ("mxfp4", QuantSpec(4, 32, "mxfp4"))
    ct = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "group_size": 128, "symmetric": True},
            }
        },
    }
    cfg = QuantizationConfig.from_model_config({"quantization_config": ct})
    assert (cfg.quant_method, cfg.default, cfg.sym) == (
        "compressed-tensors",
        QuantSpec(8, 128),
        True,
    )
    nv = {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized"}
    assert QuantizationConfig.from_model_config({"quantization_config": nv}).mode == "nvfp4"


def test_autogptq_quantize_config_json_is_found(tmp_path):
    (tmp_path / "quantize_config.json").write_text(
        json.dumps({"bits": 4, "group_size": 128, "desc_act": False, "sym": True})
    )
    cfg = find_quantization_config(tmp_path)
    assert (cfg.quant_method, cfg.bits, cfg.group_size, cfg.sym) == ("gptq", 4, 128, True)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"format": "gptq_v2"}, "gptq_v2"),  # GPTQModel and transformers 5: the current key
        ({"format": "gptq_v2", "checkpoint_format": "gptq"}, "gptq_v2"),  # it wins
        ({"format": "GPTQ"}, "gptq"),
        ({"checkpoint_format": "gptq_v2"}, "gptq_v2"),  # the older name, alone
        ({}, None),
    ],
)
def test_gptq_format_is_read_from_format_then_checkpoint_format(fields, expected):
    """Read as "gptq" (stored zero z - 1), a v2 checkpoint is off by one step everywhere."""
    section = {"quant_method": "gptq", "bits": 4, "group_size": 128, **fields}
    cfg = QuantizationConfig.from_model_config({"quantization_config": section})
    assert cfg.checkpoint_format == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"quant_method": "gptq", "format": "marlin"},
            "key 'quantization_config.format' is 'marlin'; supported: gptq, gptq_v2",
        ),
        (
            {"quant_method": "gptq", "is_marlin_format": True},
            "key 'quantization_config.is_marlin_format' is true: the weights are in the Marlin",
        ),
        (
            {"quant_method": "gptq", "pack_dtype": "int16"},
            "key 'quantization_config.pack_dtype' is 'int16'; only int32 packing is supported",
        ),
        (
            {"quant_method": "awq", "format": "gemv", "version": "gemm"},
            "key 'quantization_config.format' is 'gemv'; only AutoAWQ's 'gemm' packing",
        ),
        (
            {"quant_method": "awq", "backend": "llm-awq"},
            "key 'quantization_config.backend' is 'llm-awq': llm-awq packs its weights in "
            "another layout",
        ),
    ],
)
def test_awq_gptq_layouts_without_a_repack_are_refused_by_name(fields, message):
    with pytest.raises(UnsupportedQuantMethodError) as e:
        QuantizationConfig.from_model_config({"quantization_config": fields}, source="c.json")
    assert str(e.value).startswith(f"c.json: {message}")


def test_pack_dtype_int32_is_accepted():
    section = {"quant_method": "gptq", "pack_dtype": "torch.int32"}
    assert QuantizationConfig.from_model_config({"quantization_config": section}).bits == 4


def test_autoawq_quant_config_json_is_found(tmp_path):
    (tmp_path / "quant_config.json").write_text(
        json.dumps({"zero_point": True, "q_group_size": 64, "w_bit": 4, "version": "GEMM"})
    )
    cfg = find_quantization_config(tmp_path)
    assert (cfg.quant_method, cfg.bits, cfg.group_size, cfg.zero_point) == ("awq", 4, 64, True)
    assert cfg.source == str(tmp_path / "quant_config.json")


def test_find_prefers_config_json_and_returns_none_without_any(tmp_path):
    assert find_quantization_config(tmp_path) is None
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert find_quantization_config(tmp_path) is None
    (tmp_path / "quantization_config.json").write_text('{"bits": 8}')
    assert find_quantization_config(tmp_path).bits == 8
    (tmp_path / "config.json").write_text('{"quantization": {"bits": 2, "group_size": 32}}')
    assert find_quantization_config(tmp_path).default == QuantSpec(2, 32)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        (
            {"quantization": {"bits": 7}},
            UnsupportedBitsError,
            "c.json: key 'quantization.bits' is 7; affine quantization supports bits "
            "1, 2, 3, 4, 5, 6, 8",
        ),
        (
            {"quantization": {"group_size": 48}},
            UnsupportedGroupSizeError,
            "c.json: key 'quantization.group_size' is 48; affine quantization supports "
            "group sizes 32, 64, 128",
        ),
        (
            {"quantization": {"bits": "4"}},
            QuantConfigTypeError,
            "c.json: key 'quantization.bits' must be an integer, got str '4'",
        ),
        (
            {"quantization": {"bits": True}},
            QuantConfigTypeError,
            "c.json: key 'quantization.bits' must be an integer, got bool True",
        ),
        (
            {"quantization": {"mode": "int4"}},
            UnsupportedQuantMethodError,
            "c.json: key 'quantization.mode' is 'int4'; supported modes: affine, mxfp4, "
            "nvfp4, mxfp8",
        ),
        (
            {"quantization": {"mode": "mxfp4", "group_size": 64}},
            UnsupportedGroupSizeError,
            "c.json: key 'quantization.group_size' is 64; mode mxfp4 requires group size 32",
        ),
        (
            {"quantization": {"mode": "mxfp4", "bits": 8}},
            UnsupportedBitsError,
            "c.json: key 'quantization.bits' is 8; mode mxfp4 requires bits 4",
        ),
        (
            {"quantization": {"lm_head": 8}},
            QuantConfigTypeError,
            "c.json: key 'quantization['lm_head']' must be an object like "
            '{"bits": 8, "group_size": 64} or false, got int 8',
        ),
        (
            {"quantization": {"lm_head": {"bits": 9}}},
            UnsupportedBitsError,
            "c.json: key 'quantization['lm_head'].bits' is 9; affine quantization supports bits",
        ),
        (
            {"quantization": [4, 64]},
            QuantConfigTypeError,
            "c.json: key 'quantization' must be an object, got list [4, 64]",
        ),
        (
            {"quantization_config": {"quant_method": "awq", "bits": 8}},
            UnsupportedBitsError,
            "c.json: key 'quantization_config.bits' is 8; awq checkpoints can be loaded with "
            "bits 4",
        ),
        (
            {"quantization_config": {"quant_method": "gptq", "bits": 5}},
            UnsupportedBitsError,
            "key 'quantization_config.bits' is 5; gptq checkpoints can be loaded with bits "
            "2, 3, 4, 8",
        ),
        (
            {"quantization_config": {"quant_method": "gptq", "group_size": 100}},
            UnsupportedGroupSizeError,
            "key 'quantization_config.group_size' is 100; gptq checkpoints can be loaded with "
            "group size -1 (per row) or a positive multiple of 32",
        ),
        (
            {"quantization_config": {"quant_method": "gptq", "desc_act": "yes"}},
            QuantConfigTypeError,
            "key 'quantization_config.desc_act' must be true or false, got str 'yes'",
        ),
        (
            {"quantization_config": {"quant_method": "gptq", "dynamic": [".*"]}},
            QuantConfigTypeError,
            "c.json: key 'quantization_config.dynamic' must be an object of regex -> settings, "
            "got list",
        ),
        (
            {"quantization_config": {"quant_method": "gptq", "dynamic": {".*": 8}}},
            QuantConfigTypeError,
            "c.json: key 'quantization_config.dynamic['.*']' must be an object, got int 8",
        ),
        (
            {"quantization_config": {"quant_method": "gptq", "dynamic": {"+:(a": {}}}},
            QuantConfigTypeError,
            "c.json: key 'quantization_config.dynamic['+:(a']' is not a valid regex: missing ), "
            "unterminated subpattern at position 0",
        ),
        (
            {"quantization_config": {"quant_method": "gptq", "dynamic": {".*": {"bits": 5}}}},
            UnsupportedBitsError,
            "c.json: key 'quantization_config.dynamic['.*'].bits' is 5; gptq checkpoints can be "
            "loaded with bits 2, 3, 4, 8",
        ),
        (
            {"quantization_config": {"quant_method": "awq", "dynamic": {".*": {"bits": 8}}}},
            UnsupportedBitsError,
            "c.json: key 'quantization_config.dynamic['.*'].bits' is 8; awq checkpoints can be "
            "loaded with bits 4",
        ),
        (
            {"quantization_config": {"quant_method": "gptq", "dynamic": {".*": {"group_size": 8}}}},
            UnsupportedGroupSizeError,
            "c.json: key 'quantization_config.dynamic['.*'].group_size' is 8; gptq",
        ),
        (
            {"quantization_config": {"quant_method": "bitsandbytes"}},
            UnsupportedQuantMethodError,
            "key 'quantization_config.quant_method' is 'bitsandbytes'; supported: awq, gptq",
        ),
        (  # older transformers wrote no quant_method for bitsandbytes
            {"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}},
            UnsupportedQuantMethodError,
            "key 'quantization_config' is a bitsandbytes config (bnb_4bit_quant_type, "
            "load_in_4bit); bitsandbytes weights have no MLX layout",
        ),
        (
            {"quantization_config": {"quant_method": "awq", "version": "gemv"}},
            UnsupportedQuantMethodError,
            "key 'quantization_config.version' is 'gemv'; only AutoAWQ's 'gemm' packing",
        ),
        (
            {"quantization_config": {"quant_method": "compressed-tensors", "format": "float"}},
            UnsupportedQuantMethodError,
            "key 'quantization_config.format' is 'float'; supported compressed-tensors formats",
        ),
        (
            {
                "quantization_config": {
                    "quant_method": "compressed-tensors",
                    "format": "pack-quantized",
                    "config_groups": {"g": {"weights": {"num_bits": 7}}},
                }
            },
            UnsupportedBitsError,
            "key 'quantization_config.config_groups['g'].weights.num_bits' is 7",
        ),
    ],
)
def test_validation_errors_name_file_key_and_options(config, error, message):
    with pytest.raises(error) as e:
        QuantizationConfig.from_model_config(config, source="c.json")
    assert message in str(e.value)
    assert isinstance(e.value, QuantizationConfigError)
    assert isinstance(e.value, MlxloadError) and isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("not json at all {{{", QuantConfigJSONError, "q.json: not valid JSON"),
        (
            "[1, 2]",
            QuantConfigJSONError,
            "q.json: top level must be a JSON object, got list [1, 2]",
        ),
        ('{"per_tensor": []}', QuantConfigTypeError, "q.json: key 'per_tensor' must be an object"),
        (
            '{"per_tensor": {"a": {"group_size": 16}}}',
            UnsupportedGroupSizeError,
            "key 'per_tensor['a'].group_size' is 16",
        ),
    ],
)
def test_standalone_errors(text, error, message):
    with pytest.raises(QuantizationConfigError) as e:
        QuantizationConfig.from_json(text, source="q.json")
    assert message in str(e.value)
    assert type(e.value) is error


def test_malformed_config_json_file_names_it(tmp_path):
    (tmp_path / "config.json").write_text('{"quantization": ')
    with pytest.raises(QuantConfigJSONError, match=r"config\.json: not valid JSON"):
        find_quantization_config(tmp_path)


def test_a_config_with_the_non_finite_numbers_json_dump_writes_is_read(tmp_path):
    """Python's json.dump writes inf as a bare Infinity, which mlx-lm (json.load) reads and
    orjson refuses: an unrelated key made every load fail with 'not valid JSON'."""
    config = {"quantization": {"group_size": 64, "bits": 4}, "cap": float("inf"), "x": float("nan")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert "Infinity" in (tmp_path / "config.json").read_text()
    assert find_quantization_config(tmp_path).for_tensor("a.weight") == QuantSpec(4, 64)


def test_a_config_nested_too_deep_for_python_is_a_config_error(tmp_path):
    # (100,000: Python 3.12's json decodes 5,000 levels; 3.11 stops at 1,000)
    (tmp_path / "config.json").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(QuantConfigJSONError, match=r"config\.json: not valid JSON: maximum recur"):
        find_quantization_config(tmp_path)


def test_an_integer_past_64_bits_stays_an_integer(tmp_path):
    """orjson turns 2**64 into the float 1.8e19: the error named the wrong type."""
    (tmp_path / "config.json").write_text(
        '{"quantization": {"group_size": 64, "bits": ' + str(2**64) + "}}"
    )
    with pytest.raises(QuantizationConfigError) as e:
        find_quantization_config(tmp_path)
    assert "float" not in str(e.value) and "18446744073709551616" in str(e.value)


def test_a_string_note_in_mlx_lms_section_is_not_an_override(tmp_path):
    """Objects and booleans are overrides; a string (a tool's note) is ignored, as by mlx-lm."""
    section = {"group_size": 64, "bits": 4, "desc": "dwq", "lm_head": {"bits": 8}, "e": None}
    cfg = QuantizationConfig.from_model_config({"quantization": section}, source="c.json")
    assert cfg.per_tensor == {"lm_head": QuantSpec(8, 64), "e": None}  # null: as false
    assert cfg.for_tensor("desc.weight") == QuantSpec(4, 64)
