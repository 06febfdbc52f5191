"""Run every (task, loader) measurement in a fresh subprocess, ``reps`` times, and summarize.

Repetitions are interleaved (rep 1 of every loader, then rep 2, ...) so slow drift on a shared
machine spreads over all loaders instead of favouring one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxload.bench.environment import environment
from mlxload.bench.page_cache import COLD_NEEDS, can_drop_caches, drop_caches, warm
from mlxload.bench.stats import summarize
from mlxload.bench.worker import LOADERS
from mlxload.errors import MlxloadError

__all__ = [
    "DEFAULT_PROMPT",
    "BenchOptions",
    "WorkerError",
    "run_bench",
    "run_worker",
    "worker_args",
]

DEFAULT_PROMPT = "Tell me a story about a small robot."
# Which loaders each task measures (mx.load can't build a model; mlx_lm+dtype only matters
# for generation speed).
_TASK_LOADERS = {
    "weights": ("mlxload", "mx.load", "mlx_lm"),
    "ttft": ("mlxload", "mlx_lm", "mlx_lm+dtype"),
}
_METRICS = {
    "weights": ("open_s", "materialize_s", "peak_rss_bytes"),
    "ttft": ("ttft_s", "load_s", "prefill_s", "first_decode_s", "peak_rss_bytes"),
}


class WorkerError(MlxloadError, RuntimeError):
    """A measurement subprocess failed; the message has the end of its output."""


@dataclass
class BenchOptions:
    """What to measure.

    Attributes:
        model: Checkpoint directory (local).
        reps: Repetitions of every measurement.
        prompt: Fixed prompt for TTFT.
        loaders: Subset of :data:`mlxload.bench.worker.LOADERS`.
        tasks: ``"weights"`` and/or ``"ttft"``.
        dtype: Compute dtype for mlxload (``None``: its backend default).
        cold: Drop the page cache before every run (only where permitted).
        timeout: Seconds allowed per subprocess.
    """

    model: Path
    reps: int = 3
    prompt: str = DEFAULT_PROMPT
    loaders: Sequence[str] = LOADERS
    tasks: Sequence[str] = ("weights", "ttft")
    dtype: str | None = None
    cold: bool = False
    timeout: float = 900.0
    synthetic: dict[str, Any] | None = field(default=None)


def worker_args(task: str, loader: str, model: Path, prompt: str, dtype: str | None) -> list[str]:
    """The worker's argv: values that start with ``-`` (a prompt, a path) stay values."""
    options = [f"--prompt={prompt}"] + ([f"--dtype={dtype}"] if dtype else [])
    return [*options, "--", task, loader, str(model)]


def run_worker(
    task: str, loader: str, model: Path, prompt: str, dtype: str | None, timeout: float
) -> dict[str, Any]:
    """One measurement in a fresh Python process.

    Raises:
        WorkerError: the process failed or printed no JSON.
    """
    cmd = [
        sys.executable,
        "-m",
        "mlxload.bench.worker",
        *worker_args(task, loader, model, prompt, dtype),
    ]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise WorkerError(f"{task}/{loader} exited {proc.returncode}: " + " | ".join(tail))
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        raise WorkerError(
            f"{task}/{loader} printed no JSON result; its last line: {lines[-1][:200]!r}"
        )
    return result


def _files(model: Path) -> list[Path]:
    from mlxload.shards import checkpoint_files

    return list(checkpoint_files(model).files)


def run_bench(
    options: BenchOptions, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the benchmark.

    Returns:
        The JSON-ready result: ``model``, ``environment``, ``page_cache``, ``results`` (per
        loader, per metric: median/min/max/spread/runs), ``ratios`` and ``errors``.
    """
    files = _files(options.model)
    cold = options.cold and can_drop_caches()
    if not cold:
        warm(files)
    page_cache = (
        "cold (dropped before every run)"
        if cold
        else "warm (files read once before the runs" + (f"; {COLD_NEEDS})" if options.cold else ")")
    )
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    errors: list[str] = []
    for rep in range(options.reps):
        for task in options.tasks:
            for loader in _TASK_LOADERS[task]:
                if loader not in options.loaders:
                    continue
                if progress:
                    progress(f"rep {rep + 1}/{options.reps}: {task} {loader}")
                if cold:
                    drop_caches()
                try:
                    result = run_worker(
                        task,
                        loader,
                        options.model,
                        options.prompt,
                        options.dtype,
                        options.timeout,
                    )
                except (WorkerError, subprocess.TimeoutExpired) as e:
                    errors.append(str(e))
                    continue
                raw.setdefault(loader, {}).setdefault(task, []).append(result)
    return {
        "model": {
            "path": str(options.model),
            "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "synthetic": options.synthetic,
        },
        "environment": environment(),
        "page_cache": page_cache,
        "reps": options.reps,
        "prompt": options.prompt,
        "results": {loader: _summarize(tasks) for loader, tasks in raw.items()},
        "ratios": _ratios(raw),
        "errors": errors,
    }


def _summarize(tasks: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, runs in tasks.items():
        for metric in _METRICS[task]:
            key = metric if task == "weights" or metric == "ttft_s" else f"ttft_{metric}"
            out[key] = summarize([r.get(metric) for r in runs])
        if task == "ttft":
            out["compute_dtype"] = runs[0].get("compute_dtype")
            out["prompt_tokens"] = runs[0].get("prompt_tokens")
            out["first_tokens"] = sorted({r["first_token"] for r in runs})
            if "zero_copy" in runs[0]:
                out["zero_copy"] = runs[0]["zero_copy"]
    return out


def _median(raw: dict, loader: str, task: str, metric: str) -> float | None:
    s = summarize([r.get(metric) for r in raw.get(loader, {}).get(task, [])])
    return None if s is None else s["median"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ratios(raw: dict) -> dict[str, float | None]:
    return {
        "ttft_mlxload_vs_mlx_lm": _ratio(
            _median(raw, "mlxload", "ttft", "ttft_s"), _median(raw, "mlx_lm", "ttft", "ttft_s")
        ),
        "ttft_mlxload_vs_mlx_lm+dtype": _ratio(
            _median(raw, "mlxload", "ttft", "ttft_s"),
            _median(raw, "mlx_lm+dtype", "ttft", "ttft_s"),
        ),
        "load_mlxload_vs_mlx_lm": _ratio(
            _median(raw, "mlxload", "ttft", "load_s"), _median(raw, "mlx_lm", "ttft", "load_s")
        ),
        "materialize_mlxload_vs_mx.load": _ratio(
            _median(raw, "mlxload", "weights", "materialize_s"),
            _median(raw, "mx.load", "weights", "materialize_s"),
        ),
    }
