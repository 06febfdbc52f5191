"""Median and spread of repeated measurements."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["summarize"]


def summarize(values: Sequence[float | None]) -> dict[str, float | list[float]] | None:
    """``{"median", "min", "max", "spread", "runs"}`` of the non-None values (None if none).

    ``spread`` is ``(max - min) / median``: 0.1 means the runs span 10% of the median.
    """
    runs = [float(v) for v in values if v is not None]
    if not runs:
        return None
    median = statistics.median(runs)
    spread = (max(runs) - min(runs)) / median if median else 0.0
    return {"median": median, "min": min(runs), "max": max(runs), "spread": spread, "runs": runs}
