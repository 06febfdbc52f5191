"""Benchmark merge and align against ``cat`` on a ~1 GB, 4-shard checkpoint.

Usage::

    python benchmarks/bench_merge.py [--reps 5] [--size-mb 1024] [--cache DIR]

The checkpoint is written once with ``mx.save_safetensors`` (unaligned, like mlx-community
files: bf16 matrices, packed uint32 weights, float32 norms) into the cache directory and
reused. Each rep runs, side by side in alternating order:

* ``cat`` of the shards into one file, and ``cat`` + ``sync FILE`` (the writer fsyncs);
* ``mlxload.merge`` in a fresh Python process (wall time of the whole process, and of the
  ``merge`` call alone), plus the child's peak RSS;
* ``cat`` of each shard into an output directory vs ``mlxload.align`` into one;
* the disk floor: the same number of bytes written from memory straight to the disk
  (``O_DIRECT`` where the OS has it, 16 MiB writes) and fsynced, reading nothing. A writer
  that must fsync cannot beat this; through the page cache the same writes were as fast at
  best and up to 6x slower on this VM, so the floor is measured the steadier way.

Reported: the median of each, the ratios, and peak RSS. Peak RSS is the child's ``VmHWM``
on Linux (``ru_maxrss`` there carries over ``exec`` from the parent), ``ru_maxrss`` elsewhere.
Goals (issue 4 and 6): merge/align <= 1.25x cat, peak RSS < 256 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, sys, time
from mlxload.process_stats import peak_rss_bytes
t0 = time.perf_counter()
import mlxload.writer as w
t1 = time.perf_counter()
verb, src, out = sys.argv[1:4]
if verb == "merge":
    w.merge(src, out, force=True)
elif verb == "align":
    w.align(src, out, force=True)
else:  # "floor": put as many bytes as src holds on the disk, reading nothing (see run())
    import mmap, os
    left, block = int(src), 16 << 20
    buf = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(block))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0)
    fd = os.open(out, flags, 0o644)
    with memoryview(buf) as view:
        while left > 0:
            n = min(left, block)
            left -= os.write(fd, view[: -(-n // 4096) * 4096])  # O_DIRECT: whole blocks
    os.fsync(fd)
    os.close(fd)
t2 = time.perf_counter()
peak = peak_rss_bytes()
print(json.dumps({"import_s": t1 - t0, "call_s": t2 - t1, "peak": peak}))
"""


def make_checkpoint(root: Path, size_mb: int, shards: int = 4) -> Path:
    """Write (once) a ``size_mb`` checkpoint of ``shards`` unaligned shards plus an index.

    Generated in a child process so this process's peak memory stays small.
    """
    if not (root / "model.safetensors.index.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "--generate", str(root), str(size_mb), str(shards)]
        subprocess.run(cmd, check=True)
    return root


def _generate(root: str, size_mb: int, shards: int) -> None:
    import mlx.core as mx

    per_shard = size_mb * (1 << 20) // shards
    weight_map, total, layer = {}, 0, 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors, used = {}, 0
        while used < per_shard - (4 << 20):
            p = f"model.layers.{layer}"
            layer_tensors = {
                f"{p}.mlp.weight": mx.random.randint(0, 2**31, (1024, 1024), dtype=mx.uint32),
                f"{p}.mlp.scales": mx.random.normal((1024, 16)).astype(mx.bfloat16),
                f"{p}.attn.weight": mx.random.normal((1024, 511)).astype(mx.bfloat16),
                f"{p}.norm.weight": mx.random.normal((1023,)),
            }
            for k, v in layer_tensors.items():
                mx.eval(v)
                tensors[k] = v
                used += v.nbytes
                weight_map[k] = name
                total += v.nbytes
            layer += 1
        mx.save_safetensors(f"{root}/{name}", tensors, metadata={"format": "mlx"})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(f"{root}/model.safetensors.index.json", "w") as f:
        json.dump(index, f)


def _timed(cmd: list[str] | str, shell: bool = False) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, shell=shell, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.stdout


def _clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def run(src: Path, work: Path, reps: int) -> dict:
    shards = sorted(src.glob("model-*.safetensors"))
    quoted = " ".join(f"'{s}'" for s in shards)
    out_cat, out_merge = work / "cat.safetensors", work / "merged.safetensors"
    dir_cat, dir_align = work / "cat_dir", work / "aligned"
    times: dict[str, list[float]] = {
        k: []
        for k in (
            "cat", "cat_sync", "merge", "merge_call", "cat_each", "align", "align_call", "floor",
            "floor_call",
        )
    }  # fmt: skip
    peaks: dict[str, list[int]] = {"merge": [], "align": [], "floor": []}
    nbytes = sum(s.stat().st_size for s in shards)
    out_floor = work / "floor.bin"
    for rep in range(reps + 1):  # rep 0 warms the page cache and is discarded
        jobs = {
            "cat": lambda: _timed(f"cat {quoted} > '{out_cat}'", shell=True),
            "cat_sync": lambda: _timed(
                f"cat {quoted} > '{out_cat}' && sync '{out_cat}'", shell=True
            ),
            "merge": lambda: _timed(
                [sys.executable, "-c", _CHILD, "merge", str(src), str(out_merge)]
            ),
            "cat_each": lambda: _timed(
                f"mkdir -p '{dir_cat}' && for f in {quoted}; "
                f'do cat "$f" > \'{dir_cat}\'/$(basename "$f"); done',
                shell=True,
            ),
            "align": lambda: _timed(
                [sys.executable, "-c", _CHILD, "align", str(src), str(dir_align)]
            ),
            "floor": lambda: _timed(
                [sys.executable, "-c", _CHILD, "floor", str(nbytes), str(out_floor)]
            ),
        }
        order = list(jobs) if rep % 2 else list(reversed(jobs))
        for name in order:
            for p in (out_cat, out_merge, dir_cat, dir_align, out_floor):
                _clear(p)
            subprocess.run(["sync"], check=True)
            seconds, stdout = jobs[name]()
            if rep == 0:
                continue
            times[name].append(seconds)
            if name in peaks:
                child = json.loads(stdout)
                times[f"{name}_call"].append(child["call_s"])
                peaks[name].append(child["peak"])
    for p in (out_cat, out_merge, dir_cat, dir_align, out_floor):
        _clear(p)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "bytes": nbytes,
        "reps": reps,
        "median_s": med,
        "all_s": times,
        "peak_rss_mb": {k: max(v) / 2**20 for k, v in peaks.items()},
        "ratios": {
            "merge/cat": med["merge"] / med["cat"],
            "merge_call/cat": med["merge_call"] / med["cat"],
            "merge/cat+sync": med["merge"] / med["cat_sync"],
            "merge_call/floor_call": med["merge_call"] / med["floor_call"],
            "floor_call/cat": med["floor_call"] / med["cat"],
            "align_call/floor_call": med["align_call"] / med["floor_call"],
            "align/cat": med["align"] / med["cat_each"],
            "align_call/cat": med["align_call"] / med["cat_each"],
        },
    }


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--generate":
        _generate(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=1024)
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlxload-bench"
    parser.add_argument("--cache", type=Path, default=default_cache)
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = parser.parse_args()
    src = make_checkpoint(args.cache / f"ckpt-{args.size_mb}mb-4shards", args.size_mb)
    with tempfile.TemporaryDirectory(dir=args.cache, prefix="work-") as work:
        result = run(src, Path(work), args.reps)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    m, r = result["median_s"], result["ratios"]
    print(f"checkpoint: {src} ({result['bytes'] / 1e9:.2f} GB, 4 shards), {args.reps} reps, median")
    print(f"cat shards > file      {m['cat']:6.2f} s")
    print(f"cat + sync file        {m['cat_sync']:6.2f} s")
    print(
        f"mlxload merge          {m['merge']:6.2f} s  (call {m['merge_call']:.2f} s)  "
        f"{r['merge/cat']:.2f}x cat, {r['merge/cat+sync']:.2f}x cat+sync  "
        f"peak RSS {result['peak_rss_mb']['merge']:.0f} MB"
    )
    print(
        f"disk floor             {m['floor']:6.2f} s  (call {m['floor_call']:.2f} s)  "
        f"{r['floor_call/cat']:.2f}x cat: the same bytes from memory to disk (O_DIRECT) + fsync"
    )
    print(
        f"merge call / floor call {r['merge_call/floor_call']:.2f}x, "
        f"align call / floor call {r['align_call/floor_call']:.2f}x"
    )
    print(f"cat each shard         {m['cat_each']:6.2f} s")
    print(
        f"mlxload align          {m['align']:6.2f} s  (call {m['align_call']:.2f} s)  "
        f"{r['align/cat']:.2f}x cat  peak RSS {result['peak_rss_mb']['align']:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
