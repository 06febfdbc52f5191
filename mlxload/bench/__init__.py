"""``mlxload bench``: load and time-to-first-token measurements against mx.load and mlx_lm.load.

Each measurement runs in a fresh subprocess (:mod:`mlxload.bench.worker`) so allocator state,
imports and peak RSS are per run; :func:`run_bench` repeats and summarizes them.
"""

from __future__ import annotations

from mlxload.bench.runner import DEFAULT_PROMPT, BenchOptions, run_bench
from mlxload.bench.table import format_result

__all__ = ["DEFAULT_PROMPT", "BenchOptions", "format_result", "run_bench"]
