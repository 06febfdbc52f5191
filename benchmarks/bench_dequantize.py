"""Throughput of mlxload.dequantize against mx.dequantize, side by side in one run.

Example:
    python benchmarks/bench_dequantize.py --size 4096 --bits 3 4 8 --reps 7 --json out.json

On a Mac with Metal this times mlxload's kernel path; elsewhere, whatever path
``mlxload.dequant.which_path()`` reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import mlx.core as mx

from mlxload import dequant

DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}


def _median_seconds(fn: Callable[[], mx.array], reps: int) -> float:
    mx.eval(fn())  # warm-up: kernel build, allocator
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _time_case(
    w: mx.array, s: mx.array, b: mx.array, group_size: int, bits: int, reps: int
) -> tuple[float, float]:
    """Median seconds of (mlxload.dequantize, mx.dequantize), interleaved in two rounds."""
    ours, theirs = [], []
    for _ in range(2):  # alternate so drift in machine load hits both alike
        ours.append(_median_seconds(lambda: dequant.dequantize(w, s, b, group_size, bits), reps))
        theirs.append(
            _median_seconds(lambda: mx.dequantize(w, s, b, group_size=group_size, bits=bits), reps)
        )
    return min(ours), min(theirs)


def run(
    size: int, bits_list: list[int], dtypes: list[str], group_size: int, reps: int
) -> list[dict]:
    """Time both implementations for every bits x scales-dtype case; returns one row each."""
    rows = []
    x = mx.random.normal((size, size), key=mx.random.key(0))
    n = size * size
    for dtype_name in dtypes:
        for bits in bits_list:
            w, s, b = mx.quantize(x.astype(DTYPES[dtype_name]), group_size=group_size, bits=bits)
            mx.eval(w, s, b)
            ours = dequant.dequantize(w, s, b, group_size, bits)
            exact = bool(
                mx.array_equal(
                    ours, mx.dequantize(w, s, b, group_size=group_size, bits=bits)
                ).item()
            )
            t_ours, t_mx = _time_case(w, s, b, group_size, bits, reps)
            rows.append(
                {
                    "shape": [size, size],
                    "bits": bits,
                    "group_size": group_size,
                    "scales_dtype": dtype_name,
                    "path": dequant.last_path(),
                    "mlxload_melem_s": n / t_ours / 1e6,
                    "mx_melem_s": n / t_mx / 1e6,
                    "speedup": t_mx / t_ours,
                    "bit_exact": exact,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print a table (and optionally write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="matrix is size x size")
    parser.add_argument("--bits", type=int, nargs="+", default=[3, 4, 8])
    parser.add_argument("--dtypes", nargs="+", default=["float16", "float32"], choices=DTYPES)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (median)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON ('-': stdout)")
    args = parser.parse_args(argv)

    rows = run(args.size, args.bits, args.dtypes, args.group_size, args.reps)
    device = "metal" if mx.metal.is_available() else "cpu"
    print(f"mlx {mx.__version__}, device {device}, best of 2 medians of {args.reps} reps")
    header = f"{'shape':>11} {'bits':>4} {'scales':>8} {'path':>14} {'mlxload M/s':>12} "
    print(header + f"{'mx M/s':>9} {'speedup':>8} {'exact':>6}")
    for r in rows:
        print(
            f"{'x'.join(map(str, r['shape'])):>11} {r['bits']:>4} {r['scales_dtype']:>8} "
            f"{r['path']:>14} {r['mlxload_melem_s']:>12.1f} {r['mx_melem_s']:>9.1f} "
            f"{r['speedup']:>7.2f}x {r['bit_exact']!s:>6}"
        )
    if args.json:
        text = json.dumps({"mlx": mx.__version__, "device": device, "rows": rows}, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
