"""``mlxload bench`` argument checks: bad values stop with one line, before any worker runs."""

from __future__ import annotations

import pytest
from bit_widths import ORACLE_BITS

import mlxload.bench
from mlxload.cli import main as cli_main


@pytest.fixture
def no_workers(monkeypatch):
    def run_bench(*args, **kwargs):
        raise AssertionError("a worker would have run")

    monkeypatch.setattr(mlxload.bench, "run_bench", run_bench)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--bits", "7"],
            "argument --bits: invalid choice: 7 (choose from "
            + ", ".join(map(str, ORACLE_BITS))  # 1 where this MLX quantizes to 1 bit
            + ")",
        ),
        (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    ],
)
def test_bad_options_are_usage_errors(capsys, no_workers, argv, message):
    with pytest.raises(SystemExit) as info:
        cli_main(["bench", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_directory_without_config_stops_before_the_workers(tmp_path, capsys, no_workers):
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert cli_main(["bench", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"mlxload bench: error: {tmp_path}: no config.json; bench needs a model directory as "
        "mlx-lm loads it (config.json, weights, tokenizer)\n"
    )


@pytest.mark.parametrize(
    ("what", "words"),
    [
        ("missing", "no such file or directory"),
        ("file", "not a directory"),
        ("no weights", "no *.safetensors files"),
        ("truncated", "data section is 3 bytes, shorter than the 8 bytes"),
        ("config not JSON", "config.json: not valid JSON"),
        ("no tokenizer", "no tokenizer files (tokenizer.json, tokenizer.model, vocab.json"),
    ],
)
def test_unusable_models_are_one_error_line(tmp_path, capsys, no_workers, what, words):
    """Before, a truncated shard or a broken config.json reached every worker: 4-6 lines of
    traceback fragments under an empty table."""
    import mlx.core as mx

    model = tmp_path / "m"
    if what == "file":
        model.write_text("{}")
    elif what != "missing":
        model.mkdir()
        (model / "config.json").write_text("{" if what == "config not JSON" else "{}")
    if what in ("truncated", "config not JSON", "no tokenizer"):
        mx.save_safetensors(str(model / "model.safetensors"), {"w": mx.ones((2,))})
    if what == "truncated":
        data = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(data[:-5])
    assert cli_main(["bench", str(model)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mlxload bench: error: {model}") and err.count("\n") == 1, err
    assert words in err, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timeout", "0"], "--timeout must be a positive number of seconds"),
        (["--timeout", "-5"], "--timeout must be a positive number of seconds"),
        (["--timeout", "nan"], "--timeout must be a positive number of seconds"),
        (["--timeout", "inf"], "--timeout must be a positive number of seconds"),
        ([""], "MODEL is empty; give a model directory or hf://org/repo (or leave it out)"),
        (["--prompt", " "], "--prompt is empty; give some text (or leave it out)"),
        (
            ["some/model", "--size", "tiny"],
            "--size and --bits describe the synthetic model; they don't apply to MODEL",
        ),
        (
            ["some/model", "--bits", "8"],
            "--size and --bits describe the synthetic model; they don't apply to MODEL",
        ),
    ],
)
def test_values_a_run_cant_use_are_refused(capsys, no_workers, argv, message):
    assert cli_main(["bench", *argv]) == 2
    assert capsys.readouterr().err == f"mlxload bench: error: {message}\n"


def test_the_help_states_the_default_prompt_the_bench_uses(capsys):
    """The help can't import the runner (80 ms) to read it: this keeps the two in step."""
    from mlxload.bench import DEFAULT_PROMPT
    from mlxload.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert f"(default: '{DEFAULT_PROMPT}')" in " ".join(capsys.readouterr().out.split())


def test_a_hub_snapshot_without_tokenizer_is_not_told_to_copy_files_into_the_cache(tmp_path):
    from mlxload.model_recipe import no_tokenizer_message

    snapshot = tmp_path / "hub" / "models--me--notok" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--me--notok" / "blobs").mkdir()
    assert no_tokenizer_message(snapshot) == (
        f"{snapshot}: the repository has no tokenizer files (tokenizer.json, tokenizer.model, "
        "vocab.json, ...), which a model needs to run; use mlxload.load for its weights alone, "
        "or a repository that ships its tokenizer"
    )
    plain = tmp_path / "model"
    plain.mkdir()
    assert no_tokenizer_message(plain).endswith("copy them from the model's repository next to "
                                                "config.json")  # fmt: skip
