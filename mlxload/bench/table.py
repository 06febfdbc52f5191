"""The readable form of a benchmark result."""

from __future__ import annotations

from typing import Any

__all__ = ["format_result"]

_ROWS = (
    ("open (headers)", "open_s", "s"),
    ("materialize all weights", "materialize_s", "s"),
    ("peak RSS (weights)", "peak_rss_bytes", "b"),
    ("TTFT", "ttft_s", "s"),
    ("  load", "ttft_load_s", "s"),
    ("  prefill", "ttft_prefill_s", "s"),
    ("  first decode", "ttft_first_decode_s", "s"),
    ("peak RSS (TTFT)", "ttft_peak_rss_bytes", "b"),
)


def _cell(summary: dict[str, Any] | None, unit: str) -> str:
    if summary is None:
        return "-"
    m = summary["median"]
    value = (
        f"{m / 2**20:.0f} MiB" if unit == "b" else (f"{m * 1e3:.1f} ms" if m < 1 else f"{m:.2f} s")
    )
    return f"{value} ±{summary['spread'] * 50:.0f}%" if len(summary["runs"]) > 1 else value


def format_result(result: dict[str, Any]) -> str:
    """A table (median, ± half the min-max range as % of the median) plus context lines."""
    env, model = result["environment"], result["model"]
    loaders = list(result["results"])
    lines = [
        f"model: {model['path']} ({model['files']} file{'s' * (model['files'] != 1)}, "
        f"{_size(model['bytes'])})",
        f"MLX {env['mlx']} ({env['backend']}), mlx-lm {env['mlx_lm']}, mlxload {env['mlxload']}, "
        f"Python {env['python']}, {env['platform']}",
        f"zero-copy: {'yes' if env['zero_copy'] else 'no (copy once)'}; "
        f"page cache: {result['page_cache']}; reps: {result['reps']}, each in a fresh process",
        f"prompt: {result['prompt']!r}",
        "",
    ]
    width = max(len(r[0]) for r in _ROWS)
    cols = [max(14, len(name) + 2) for name in loaders]
    lines.append(" " * width + "".join(n.rjust(c) for n, c in zip(loaders, cols, strict=True)))
    for label, key, unit in _ROWS:
        cells = [_cell(result["results"][n].get(key), unit) for n in loaders]
        if all(c == "-" for c in cells):
            continue
        lines.append(
            label.ljust(width) + "".join(c.rjust(w) for c, w in zip(cells, cols, strict=True))
        )
    dtypes = [str(result["results"][n].get("compute_dtype") or "-") for n in loaders]
    lines.append(
        "compute dtype".ljust(width)
        + "".join(d.rjust(w) for d, w in zip(dtypes, cols, strict=True))
    )
    lines.append("")
    for name, value in result["ratios"].items():
        if value is not None:
            lines.append(f"{name.replace('_vs_', ' / ')}: {value:.3f}x")
    for error in result["errors"]:
        lines.append(f"error: {error}")
    return "\n".join(lines)


def _size(nbytes: int) -> str:
    """``132 MiB``, or ``64 KiB`` below a MiB (a tiny model isn't ``0 MiB``)."""
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"
