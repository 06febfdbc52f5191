"""Every example runs end to end on a tiny synthetic checkpoint (chat driven through stdin)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_fixtures import tiny_checkpoint

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
    assert "compute dtype float32" in proc.stderr
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
    assert "lm_head.weight -> QuantSpec(bits=8, group_size=64, mode='affine')" in out
    assert "16 quantized modules" in out and "as a layer: QuantizedLinear" in out
    assert "equal to mx.dequantize: True" in out
