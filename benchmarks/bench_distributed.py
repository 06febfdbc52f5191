"""Per-rank loading for MLX distributed: mlxload vs mlx-lm's ``sharded_load``, 2 ranks.

Each loader runs as its own ``mlx.launch --backend ring -n 2`` job on 127.0.0.1 (fresh
processes, so peak RSS is the loader's own), on the same synthetic 4-bit Llama checkpoint, in
the checkpoint's dtype for both (float16; mlx-lm keeps it, mlxload is told to). Per rank:

* **bytes read**: tensor bytes the loader read (mlxload counts its blocks) and the process's
  ``rchar`` delta over the load (every ``read``/``pread``, page-cache hits included; the only
  measure that sees mlx-lm's ``mx.load`` reads);
* **peak RSS**: ``VmHWM`` (see :mod:`mlxload.process_stats`) after the load, and the growth
  over the baseline after imports;
* **load time**: wall seconds of the load call (imports excluded; page cache warm after the
  first job, so this is not cold-disk I/O).

Usage:
    python benchmarks/bench_distributed.py [--size medium] [--mode tensor|pipeline] [--reps 2]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent / "tests"))


def _rank(loader: str, mode: str, ckpt: str, out: Path) -> None:
    import time

    import mlx.core as mx
    import mlx_lm.utils  # noqa: F401  (imports are not part of the timing)

    from mlxload.distributed import load_model_sharded
    from mlxload.process_stats import io_read_bytes, peak_rss_bytes

    group = mx.distributed.init(strict=True, backend="ring")
    base_rss, io0 = peak_rss_bytes(), io_read_bytes()
    t0 = time.perf_counter()
    if loader == "mlxload":
        groups = {"tensor_group": group} if mode == "tensor" else {"pipeline_group": group}
        model, _, _ = load_model_sharded(ckpt, dtype="float16", **groups)
        tensor_bytes = model.load_report.bytes_read
    else:
        from mlx_lm.utils import sharded_load

        groups = {"tensor_group": group} if mode == "tensor" else {"pipeline_group": group}
        model, _ = sharded_load(ckpt, **groups)
        tensor_bytes = None
    seconds = time.perf_counter() - t0
    row = {
        "loader": loader,
        "rank": group.rank(),
        "seconds": seconds,
        "tensor_bytes": tensor_bytes,
        "io_bytes": None if io0 is None else io_read_bytes() - io0,  # None without /proc
        "peak_rss": peak_rss_bytes(),
        "rss_growth": peak_rss_bytes() - base_rss,
        "mlx_peak": mx.get_peak_memory(),
    }
    (out / f"{loader}-{group.rank()}.json").write_text(json.dumps(row))


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--size",
        default="medium",
        help="synthetic size: small, medium or large (tiny layers are too narrow to split in two)",
    )
    parser.add_argument("--mode", default="tensor", choices=["tensor", "pipeline"])
    parser.add_argument("--reps", type=int, default=2, help="jobs per loader (alternating)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--rank-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_worker:
        loader, mode, ckpt, out = args.rank_worker
        _rank(loader, mode, ckpt, Path(out))
        return

    from dist_fixtures import launch_ring

    from mlxload.synthetic import synthetic_checkpoint

    model_type = "qwen2" if args.mode == "pipeline" else "llama"
    if model_type == "qwen2":
        from dist_fixtures import qwen2_checkpoint

        cache = Path(tempfile.gettempdir()) / "mlxload-bench-dist"
        ckpt = qwen2_checkpoint(cache, layers=8)  # llama has no pipeline() in mlx-lm
    else:
        ckpt = synthetic_checkpoint(args.size)
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    total = index["metadata"]["total_size"]
    print(f"checkpoint {ckpt} ({model_type}): {total / 2**20:.1f} MiB of tensors, 2 ranks")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for loader in ("mlxload", "mlx-lm"):
                out = Path(tmp) / f"{loader}-{rep}"
                out.mkdir()
                worker = ["--rank-worker", loader, args.mode, str(ckpt), str(out)]
                result = launch_ring(HERE, *worker, timeout=600)
                for r in (0, 1):
                    f = out / f"{loader}-{r}.json"
                    if not f.is_file():
                        sys.exit(f"{loader} rank {r} failed:\n{result.stderr[-3000:]}")
                    rows.append(json.loads(f.read_text()) | {"rep": rep})

    print(f"{'loader':8} {'rank':>4} {'tensor MiB':>10} {'rchar MiB':>9} {'% model':>7} "
          f"{'peak RSS MiB':>12} {'RSS +MiB':>8} {'MLX peak MiB':>12} {'load s':>7}")  # fmt: skip
    for loader in ("mlxload", "mlx-lm"):
        for r in (0, 1):
            mine = [x for x in rows if x["loader"] == loader and x["rank"] == r]
            io = [x["io_bytes"] for x in mine if x["io_bytes"] is not None]
            med_io = statistics.median(io) if io else None  # None: no /proc/self/io (macOS)
            seconds = statistics.median(x["seconds"] for x in mine)
            share = "      -" if med_io is None else f"{100 * med_io / total:6.1f}%"
            last = mine[-1]
            print(
                f"{loader:8} {r:>4} {_mib(last['tensor_bytes']):>10} {_mib(med_io):>9} "
                f"{share} {_mib(last['peak_rss']):>12} "
                f"{_mib(last['rss_growth']):>8} {_mib(last['mlx_peak']):>12} "
                f"{seconds:7.3f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint_bytes": total, "rows": rows}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
