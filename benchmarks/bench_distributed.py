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

With ``--hub`` the checkpoint is served by the tests' Hub stand-in on 127.0.0.1 and every rank
starts from its own empty Hub cache; three loaders then run, and each rank's **downloaded**
bytes are counted: ``mlxload-ranges`` (``fetch="ranges"``: the bytes its Range requests
received, plus the metadata files), ``mlxload-files`` (the shards it needs, whole) and
``mlx-lm`` (``sharded_load``), the last two as the bytes of the blobs in the rank's cache.

Usage:
    python benchmarks/bench_distributed.py [--size medium] [--mode tensor|pipeline] [--reps 2]
        [--hub] [--json out.json]
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


def _cache_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "hub").rglob("blobs/*") if p.is_file())


def _rank(loader: str, mode: str, ckpt: str, out: Path) -> None:
    import time

    import mlx.core as mx

    group = mx.distributed.init(strict=True, backend="ring")
    home = out / f"hf-home-{group.rank()}"
    if ckpt.startswith("hf://"):  # each rank its own empty Hub cache, as on its own machine
        os.environ["HF_HOME"] = str(home)
        os.environ["HF_HUB_CACHE"] = str(home / "hub")

    import mlx_lm.utils  # noqa: F401  (imports are not part of the timing)

    from mlxload.distributed import load_model_sharded
    from mlxload.process_stats import io_read_bytes, peak_rss_bytes

    base_rss, io0 = peak_rss_bytes(), io_read_bytes()
    t0 = time.perf_counter()
    fetched = 0
    if loader.startswith("mlxload"):
        groups = {"tensor_group": group} if mode == "tensor" else {"pipeline_group": group}
        fetch = "ranges" if loader == "mlxload-ranges" else "files"
        model, _, _ = load_model_sharded(ckpt, dtype="float16", fetch=fetch, **groups)
        tensor_bytes = model.load_report.bytes_read
        fetched = model.load_report.bytes_fetched
    else:
        from mlx_lm.utils import sharded_load

        groups = {"tensor_group": group} if mode == "tensor" else {"pipeline_group": group}
        model, _ = sharded_load(ckpt.removeprefix("hf://"), **groups)
        tensor_bytes = None
    seconds = time.perf_counter() - t0
    downloaded = fetched + _cache_bytes(home) if ckpt.startswith("hf://") else None
    row = {
        "downloaded": downloaded,
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


def _serve(ckpt: Path):  # -> HubServer
    """Serve ``ckpt`` as ``bench/model`` on 127.0.0.1 and point the rank processes at it."""
    from hub_server import FakeRepo, HubServer

    files = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    server = HubServer(FakeRepo("bench/model", files), max_requests=10**7, lifetime_s=3600)
    server.start()
    os.environ.update(
        HF_ENDPOINT=server.url,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_OFFLINE="0",
    )
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        os.environ.pop(key, None)
    return server


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
    parser.add_argument(
        "--hub", action="store_true", help="load from a local Hub stand-in; count downloads"
    )
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

    loaders = ("mlxload-ranges", "mlxload-files", "mlx-lm") if args.hub else ("mlxload", "mlx-lm")
    source = str(ckpt)
    server = None
    if args.hub:
        server = _serve(ckpt)
        source = "hf://bench/model"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for loader in loaders:
                out = Path(tmp) / f"{loader}-{rep}"
                out.mkdir()
                worker = ["--rank-worker", loader, args.mode, source, str(out)]
                result = launch_ring(HERE, *worker, timeout=600)
                for r in (0, 1):
                    f = out / f"{loader}-{r}.json"
                    if not f.is_file():
                        sys.exit(f"{loader} rank {r} failed:\n{result.stderr[-3000:]}")
                    rows.append(json.loads(f.read_text()) | {"rep": rep})

    if server is not None:
        server.stop()
    print(f"{'loader':14} {'rank':>4} {'tensor MiB':>10} {'rchar MiB':>9} {'% model':>7} "
          f"{'peak RSS MiB':>12} {'RSS +MiB':>8} {'MLX peak MiB':>12} {'load s':>7}"
          + (f" {'downloaded MiB':>14} {'% model':>7}" if args.hub else ""))  # fmt: skip
    for loader in loaders:
        for r in (0, 1):
            mine = [x for x in rows if x["loader"] == loader and x["rank"] == r]
            io = [x["io_bytes"] for x in mine if x["io_bytes"] is not None]
            med_io = statistics.median(io) if io else None  # None: no /proc/self/io (macOS)
            seconds = statistics.median(x["seconds"] for x in mine)
            share = "      -" if med_io is None else f"{100 * med_io / total:6.1f}%"
            last = mine[-1]
            got = last["downloaded"]
            hub = "" if got is None else f" {_mib(got):>14} {100 * got / total:6.1f}%"
            print(
                f"{loader:14} {r:>4} {_mib(last['tensor_bytes']):>10} {_mib(med_io):>9} "
                f"{share} {_mib(last['peak_rss']):>12} "
                f"{_mib(last['rss_growth']):>8} {_mib(last['mlx_peak']):>12} "
                f"{seconds:7.3f}{hub}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint_bytes": total, "rows": rows}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
