"""``mlxload --version`` and ``mlxload inspect`` through the real console entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
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
    assert "2 tensors in 1 file, 92 B" in out
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
    assert f"80% of bytes need a copy — run `mlxload align {path}`" in out
    import mlx.core as mx

    if not mx.metal.is_available():  # the advice is about Macs: say so where it doesn't apply
        assert "(zero-copy is for Apple silicon: on this backend every tensor is copied" in out


def test_inspect_of_a_link_to_a_hub_snapshot_advises_an_aligned_copy(tmp_path, capsys):
    """The cache is never rewritten: a link to a snapshot is the snapshot."""
    header = {"a": entry("U8", [1], 0, 1), "b": entry("F32", [1], 1, 5)}
    body = json.dumps(header).encode()
    body += b" " * (-(8 + len(body)) % 8)
    snapshot = tmp_path / "hub" / "models--org--m" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "blobs").mkdir()
    write_raw(snapshot / "model.safetensors", body, bytes(5))
    link = tmp_path / "mymodel"
    link.symlink_to(snapshot)
    assert main(["inspect", str(link)]) == 0
    assert f"run `mlxload align {link} OUTDIR`" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"garbage!garbage!"])
def test_inspect_bad_file_is_a_clean_error(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    result = _run("inspect", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("mlxload inspect: error: ") and str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_names_from_the_file_cannot_drive_the_terminal(tmp_path, capsys):
    # An escape sequence in a tensor name could clear the screen or set the window title; a
    # newline could forge a table row. Both are printed escaped; --json stays exact.
    from safetensors.numpy import save_file

    evil = "w\x1b[2J\x1b]0;pwned\x07"
    forged = "fake\nlm_head.weight  F32 1 4 B  yes"
    path = tmp_path / "esc.safetensors"
    save_file(
        {
            evil: np.zeros(1, np.float32),
            forged: np.zeros(1, np.float32),
            "é😀": np.zeros(1, np.float32),
        },
        str(path),
    )
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "w\\x1b[2J\\x1b]0;pwned\\x07" in out and "fake\\nlm_head.weight" in out
    assert "é😀" in out  # printable non-ASCII is kept
    assert not any(line.startswith("lm_head.weight") for line in out.splitlines())
    assert main(["inspect", str(path), "--json"]) == 0
    names = {t["name"] for t in json.loads(capsys.readouterr().out)["tensors"]}
    assert names == {evil, forged, "é😀"}


def test_one_very_long_name_does_not_pad_every_row(tmp_path, capsys):
    tensors = {f"t{i}": mx.zeros((1,)) for i in range(200)} | {"x" * 50_000: mx.zeros((1,))}
    path = tmp_path / "long.safetensors"
    mx.save_safetensors(str(path), tensors)
    assert main(["inspect", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    short = [line for line in lines if line.startswith("t1 ")]
    assert len(short) == 1 and len(short[0]) < 130
    assert sum(map(len, lines)) < 50_000 + 201 * 130


def test_an_error_naming_untrusted_text_is_printed_escaped(tmp_path, capsys):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "gone\x1b[2J.safetensors"}})
    )
    assert main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "gone\\x1b[2J.safetensors" in err


def test_table_fits_the_longest_dtype_and_counts_read_as_words(tmp_path, capsys):
    from st_bytes import entry, write_raw

    from mlxload.cli import main as cli_main

    path = write_raw(tmp_path / "f.safetensors", {"x": entry("F8_E4M3FNUZ", [2], 0, 2)}, b"\1\2")
    assert cli_main(["inspect", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].index("shape") == lines[1].index("2 ") and "F8_E4M3FNUZ 2" in lines[1]
    assert "1 tensor in 1 file, 2 B (F8_E4M3FNUZ 2 B)" in lines
    empty = write_raw(tmp_path / "e.safetensors", {}, b"")
    assert cli_main(["inspect", str(empty)]) == 0
    assert "0 tensors in 1 file, 0 B" in capsys.readouterr().out.splitlines()


def test_inspect_names_each_tensors_file_and_shows_the_metadata(tmp_path, capsys):
    """--json gave offsets without the shard they are offsets into; the table had no metadata."""
    mx.save_safetensors(str(tmp_path / "a.safetensors"), {"x": mx.ones((2,))}, {"format": "mlx"})
    mx.save_safetensors(str(tmp_path / "b.safetensors"), {"y": mx.ones((3,))}, {"format": "mlx"})
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    files = {t["name"]: t["file"] for t in data["tensors"]}
    assert files == {"x": str(tmp_path / "a.safetensors"), "y": str(tmp_path / "b.safetensors")}
    assert main(["inspect", str(tmp_path)]) == 0
    assert "\nmetadata: format=mlx\n" in capsys.readouterr().out


def test_a_long_metadata_value_is_cut_to_one_line(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"x": mx.ones((2,))}, {"chat_template": "x" * 5000})
    assert main(["inspect", str(path)]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("metadata: "))
    assert line == f"metadata: chat_template={'x' * 57}..."


def test_inspect_summarizes_the_quantization(tmp_path, capsys):
    """It showed packed U32 storage only: no bits, group size or mode per module."""
    from model_fixtures import tiny_checkpoint

    model = tiny_checkpoint(tmp_path / "cache", overrides=(("lm_head", 8),))
    assert main(["inspect", str(model)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("quantized:"))
    assert line.startswith(
        "quantized: 16 modules (4-bit, group 64, affine: 15; 8-bit, group 64, affine: 1), "
    )
    import mlxload

    ckpt = mlxload.load(model)
    stored = weights = 0
    for name in ckpt:
        if name.endswith(".scales"):
            module = name.removesuffix(".scales")
            bits = 8 if module == "lm_head" else 4
            parts = [ckpt.info(f"{module}.{s}") for s in ("weight", "scales", "biases")]
            stored += 8 * sum(p.nbytes for p in parts)
            weights += int(np.prod(parts[0].shape)) * 32 // bits
    assert line.endswith(f", {stored / weights:.2f} bits per quantized weight")
    assert main(["inspect", str(model), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["quantization"]
    assert summary["modules"] == 16 and summary["config"] == str(model / "config.json")

    config = json.loads((model / "config.json").read_text())
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    (model / "config.json").write_text(json.dumps(config))
    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "quantized: 16 modules; no quantization config found" in out


def test_inspect_of_a_float_checkpoint_has_no_quantization_line(tmp_path, capsys):
    path = tmp_path / "f.safetensors"
    mx.save_safetensors(str(path), {"w": mx.ones((4, 4)), "w.scales": mx.ones((4, 1))})
    assert main(["inspect", str(path)]) == 0
    assert "quantized:" not in capsys.readouterr().out
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quantization"] is None


def test_inspect_warns_of_tensors_a_stale_index_leaves_out(tmp_path, capsys):
    import mlx.core as mx

    mx.save_safetensors(str(tmp_path / "a.safetensors"), {"x": mx.ones((2,)), "y": mx.ones((3,))})
    mx.save_safetensors(str(tmp_path / "b.safetensors"), {"z": mx.ones((4,))})
    weight_map = {"x": "a.safetensors", "z": "b.safetensors"}  # no "y"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert main(["inspect", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "2 tensors in 2 files" in captured.out
    assert captured.err == (
        f"mlxload inspect: warning: {tmp_path}: the index doesn't list 1 tensor(s) its shards "
        "hold, e.g. 'y' in a.safetensors (a stale index?); they are not counted here, and "
        "loading through the index won't see them\n"
    )
