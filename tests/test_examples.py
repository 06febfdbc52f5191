"""Every example runs end to end on a tiny synthetic checkpoint (chat driven through stdin)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from model_fixtures import tiny_checkpoint

from mlxload.backend import backend

pytest.importorskip("mlx_lm")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("cache"), overrides=(("lm_head", 8),))


def _run(script: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_generate(model):
    proc = _run("generate.py", "--model", str(model), "--max-tokens", "8", "--prompt", "hello")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()  # some generated text
    assert f"compute dtype {'float32' if backend() == 'cpu' else None}" in proc.stderr
    assert " tokens/s (prompt: " in proc.stderr and "time to first token" in proc.stderr


def test_chat_through_stdin(model):
    stdin = "hello\n/reset\nwhat is the capital of france\n"
    proc = _run("chat.py", "--model", str(model), "--max-tokens", "6", "--temp", "0", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("[ttft ") == 2  # one per reply; /reset is not a message
    assert proc.stdout.endswith("> ")  # the prompt that met EOF, then a clean exit
    assert "Traceback" not in proc.stderr


def test_chat_quit_command(model):
    proc = _run("chat.py", "--model", str(model), "--max-tokens", "4", stdin="/quit\nhello\n")
    assert proc.returncode == 0, proc.stderr
    assert "[ttft " not in proc.stderr  # left before answering anything


def test_load_quantized_walkthrough(model):
    proc = _run("load_quantized.py", "--model", str(model))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "1 per-module overrides" in out
    assert "e.g. lm_head: QuantSpec(bits=8, group_size=64, mode='affine')" in out
    assert "16 quantized modules" in out and "as a layer: QuantizedLinear" in out
    assert "equal to mx.dequantize: True" in out


@pytest.mark.parametrize(("mode", "group_size"), [("mxfp4", 32), ("nvfp4", 16)])
def test_load_quantized_walkthrough_of_a_float_mode_checkpoint(tmp_path, mode, group_size):
    """Step 4 failed: 'affine dequantization needs biases (got biases=None)'."""
    from mlx_lm.convert import convert

    out = tmp_path / mode
    convert(str(tiny_checkpoint(tmp_path / "cache", bits=None)), str(out), quantize=True,
            q_group_size=group_size, q_bits=4, q_mode=mode)  # fmt: skip
    proc = _run("load_quantized.py", "--model", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"mode='{mode}'" in proc.stdout
    assert "4. dequantize (mx.dequantize)" in proc.stdout
    assert "equal to mx.dequantize: True" in proc.stdout


def test_load_quantized_walkthrough_of_a_checkpoint_that_lost_its_config(model, tmp_path):
    """It said 'this checkpoint is not quantized' of packed weights with no config."""
    bare = tmp_path / "bare"
    shutil.copytree(model, bare)
    config = json.loads((bare / "config.json").read_text())
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    (bare / "config.json").write_text(json.dumps(config))
    proc = _run("load_quantized.py", "--model", str(bare))
    assert proc.returncode == 1
    assert "not quantized" not in proc.stdout
    assert "so it is quantized, but the checkpoint has no quantization config" in proc.stderr


def test_chat_without_a_chat_template_sends_the_raw_message(model, tmp_path):

    base = tmp_path / "base-model"
    shutil.copytree(model, base)
    config_path = base / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    del config["chat_template"]
    config_path.write_text(json.dumps(config))
    proc = _run("chat.py", "--model", str(base), "--max-tokens", "4", stdin="hello\nagain\n")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "no chat template: each message is sent alone as a raw prompt" in proc.stderr
    assert proc.stderr.count("[ttft ") == 2


@pytest.mark.parametrize("script", ["generate.py", "chat.py", "load_quantized.py"])
def test_missing_model_is_one_error_line(script, tmp_path):
    missing = tmp_path / "nonexistent"
    proc = _run(script, "--model", str(missing), stdin="")
    assert proc.returncode == 1
    assert proc.stderr == f"{script}: error: {missing}: no such file or directory\n"


@pytest.mark.parametrize("script", ["generate.py", "chat.py", "load_quantized.py"])
def test_unknown_size_is_a_usage_error(script):
    proc = _run(script, "--size", "bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]  # argparse's wording of the choices varies by version
    assert last.startswith(f"{script}: error: argument --size: invalid choice: 'bogus' (choose")
    assert all(size in last for size in ("tiny", "small", "medium", "large"))


@pytest.mark.parametrize("script", ["generate.py", "chat.py", "distributed_generate.py"])
@pytest.mark.parametrize("count", ["0", "-3"])
def test_max_tokens_under_one_is_a_usage_error(script, count):
    """0 reached mlx-lm (a traceback); a negative count generated until EOS (7,591 tokens)."""
    proc = _run(script, "--max-tokens", count)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"{script}: error: argument --max-tokens: must be at least 1, got {count}"
    )


def test_ctrl_c_in_an_example_is_one_line_not_a_traceback():
    import sys

    sys.path.insert(0, str(EXAMPLES))
    try:
        from _model_arg import run_example
    finally:
        sys.path.remove(str(EXAMPLES))

    def interrupted() -> int:
        raise KeyboardInterrupt

    assert run_example(interrupted) == 130


def test_mlxload_errors_are_one_line(model, tmp_path):

    broken = tmp_path / "broken-tokenizer"
    shutil.copytree(model, broken)
    (broken / "tokenizer.json").write_text("{")
    proc = _run("generate.py", "--model", str(broken))
    assert proc.returncode == 1
    assert proc.stderr == (
        f"generate.py: error: {broken}/tokenizer.json: not valid JSON (Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)); copy it again from the model's "
        "repository\n"
    )
