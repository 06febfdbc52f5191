"""``mlxload bench``: load and time-to-first-token measurements against mx.load and mlx_lm.load.

Each measurement runs in a fresh subprocess (:mod:`mlxload.bench.worker`) so allocator state,
imports and peak RSS are per run; :func:`run_bench` repeats and summarizes them.

Names are imported on first use: the worker runs as ``python -m mlxload.bench.worker``, and a
package that imported it eagerly would make Python warn that it was already imported.
"""

from __future__ import annotations

from mlxload._lazy import lazy_getattr

__all__ = ["DEFAULT_PROMPT", "BenchOptions", "format_result", "run_bench"]

_LAZY = {
    "DEFAULT_PROMPT": "mlxload.bench.runner",
    "BenchOptions": "mlxload.bench.runner",
    "run_bench": "mlxload.bench.runner",
    "format_result": "mlxload.bench.table",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
