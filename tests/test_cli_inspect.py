"""``mlxload --version`` and ``mlxload inspect`` through the real console entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import mlx.core as mx
import pytest
from st_bytes import entry, write_raw

from mlxload import __version__
from mlxload.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlxload", *args], capture_output=True, text=True, timeout=60
    )


def test_version():
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mlxload {__version__}"


def test_inspect_table_and_json(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    mx.save_safetensors(
        str(path), {"emb": mx.zeros((10, 4), dtype=mx.bfloat16), "w": mx.zeros((3,))}
    )
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "emb" in out and "BF16" in out and "10x4" in out
    assert "2 tensors in 1 file(s), 92 B" in out
    assert main(["inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_bytes"] == 92 and data["total_tensors"] == 2
    assert {t["name"]: t["shape"] for t in data["tensors"]} == {"emb": [10, 4], "w": [3]}


def test_inspect_reports_misaligned_bytes(tmp_path, capsys):
    header = {"a": entry("U8", [1], 0, 1), "b": entry("F32", [1], 1, 5)}
    body = json.dumps(header).encode()
    body += b" " * (-(8 + len(body)) % 8)  # data starts 8-aligned, so "b" sits at offset % 4 == 1
    path = write_raw(tmp_path / "m.safetensors", body, bytes(5))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "80% of bytes need a copy — run `mlxload align`" in out
    import mlx.core as mx

    if not mx.metal.is_available():  # the advice is about Macs: say so where it doesn't apply
        assert "(zero-copy is for Apple silicon: on this backend every tensor is copied" in out


@pytest.mark.parametrize("content", [b"", b"garbage!garbage!"])
def test_inspect_bad_file_is_a_clean_error(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    result = _run("inspect", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("mlxload inspect: error: ") and str(path) in result.stderr
    assert "Traceback" not in result.stderr
