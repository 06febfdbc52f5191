"""mlxload bench on a tiny synthetic model: the JSON has every field, with positive numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlxload.backend import backend
from mlxload.bench import runner
from mlxload.bench.stats import summarize
from mlxload.bench.table import format_result
from mlxload.cli.bench import main

pytest.importorskip("mlx_lm")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    env = {**os.environ, "MLXLOAD_CACHE": str(tmp_path_factory.mktemp("cache"))}
    proc = subprocess.run(
        [sys.executable, "-m", "mlxload", "bench", "--size", "tiny", "--reps", "1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_fields(result):
    assert result["errors"] == []
    assert result["reps"] == 1 and result["page_cache"].startswith("warm")
    env = result["environment"]
    from mlxload.backend import backend
    from mlxload.tensor_file import zero_copy_supported

    assert env["backend"] == backend() and env["zero_copy"] is zero_copy_supported()
    # float32 on the CPU backend; each tensor as stored on GPUs
    assert env["compute_dtype"] == ("float32" if backend() == "cpu" else "as stored")
    assert env["mlx"] and env["mlx_lm"]
    assert result["model"]["files"] == 3 and result["model"]["synthetic"]["name"] == "tiny"
    assert set(result["results"]) == {"mlxload", "mx.load", "mlx_lm", "mlx_lm+dtype"}


@pytest.mark.parametrize(
    ("loader", "metrics"),
    [
        (
            "mlxload",
            (
                "open_s",
                "materialize_s",
                "peak_rss_bytes",
                "ttft_s",
                "ttft_load_s",
                "ttft_prefill_s",
                "ttft_first_decode_s",
                "ttft_peak_rss_bytes",
            ),
        ),
        ("mx.load", ("open_s", "materialize_s", "peak_rss_bytes")),
        ("mlx_lm", ("materialize_s", "ttft_s", "ttft_load_s", "ttft_prefill_s")),
        ("mlx_lm+dtype", ("ttft_s", "ttft_first_decode_s")),
    ],
)
def test_positive_numbers(result, loader, metrics):
    for metric in metrics:
        summary = result["results"][loader][metric]
        assert summary["median"] > 0 and len(summary["runs"]) == 1, (loader, metric)


def test_ttft_parts_and_dtypes(result):
    ours = result["results"]["mlxload"]
    parts = sum(ours[k]["median"] for k in ("ttft_load_s", "ttft_prefill_s", "ttft_first_decode_s"))
    assert ours["ttft_s"]["median"] == pytest.approx(parts, rel=1e-6)
    assert ours["compute_dtype"] == ("float32" if backend() == "cpu" else "as stored")
    if backend() != "metal":
        assert ours["zero_copy"] == "no"
    assert result["results"]["mlx_lm"]["compute_dtype"] == "float16"
    # same weights, same compute dtype: the same first token
    assert ours["first_tokens"] == result["results"]["mlx_lm+dtype"]["first_tokens"]
    assert all(v > 0 for v in result["ratios"].values())


def test_table_renders(result):
    text = format_result(result)
    for label in ("materialize all weights", "TTFT", "  prefill", "compute dtype", "page cache"):
        assert label in text
    assert "ttft_mlxload / mlx_lm:" in text
    size = result["model"]["bytes"]
    assert (" MiB)" if size >= 2**20 else " KiB)") in text and " 0 MiB)" not in text


def test_summarize():
    assert summarize([1.0, 3.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "spread": 1.0,
        "runs": [1.0, 3.0, 2.0],
    }
    assert summarize([None]) is None


def test_reps_must_be_positive(capsys):
    assert main(["--reps", "0"]) == 2
    assert "--reps must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("stdout", ["loading...\nnot json at all\n", "1.5\n"])
def test_worker_without_json_is_a_worker_error(monkeypatch, stdout):
    done = subprocess.CompletedProcess([], 0, stdout=stdout, stderr="")
    monkeypatch.setattr(runner.subprocess, "run", lambda *a, **k: done)
    with pytest.raises(runner.WorkerError, match=r"weights/mlxload printed no JSON result"):
        runner.run_worker("weights", "mlxload", "m", "p", None, 10.0)


@pytest.mark.parametrize(
    ("prompt", "model", "dtype"),
    [("-hi", "-model", "float16"), ("--dtype=x", "m", None), ("a b", "m", "bfloat16")],
)
def test_worker_reads_back_values_that_look_like_options(monkeypatch, prompt, model, dtype):
    from mlxload.bench import worker

    seen = {}

    def fake_ttft(loader, path, prompt, dtype):
        seen.update(loader=loader, path=path, prompt=prompt, dtype=dtype)
        return {}

    monkeypatch.setattr(worker, "_ttft", fake_ttft)
    monkeypatch.setattr(worker, "peak_rss_bytes", lambda: 0)
    argv = runner.worker_args("ttft", "mlxload", model, prompt, dtype)
    assert worker.main(argv) == 0
    assert seen == {"loader": "mlxload", "path": Path(model), "prompt": prompt, "dtype": dtype}


def test_worker_runs_without_warnings():
    """``python -m mlxload.bench.worker`` must not find itself imported by its package
    (a RuntimeWarning that PYTHONWARNINGS=error turns into a failed measurement)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "mlxload.bench.worker", "--help"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-400:]
    assert proc.stderr == ""
