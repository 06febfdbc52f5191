"""Foundation benchmarks: header open time and full-materialization throughput.

Measured side by side in one run on the same files (timings on shared machines are noisy, so
compare the ratios, not the absolute numbers):

* **open**: a 5,000-tensor header, fully validated — mlxload.read_header / mlxload.safe_open vs
  ``safetensors.safe_open`` vs ``mx.load`` (lazy) vs a bare ``orjson`` parse; plus the RSS growth
  of opening a large file; and the same on two headers shaped like real models' (sparse files:
  the data section takes no disk space).
* **each tensor on its own**: 5,000 small tensors read one at a time (``ckpt[name]``,
  ``get_tensor``) against ``mx.load`` evaluated per tensor and all at once.
* **materialize**: every tensor of a large fp16 file with a warm page cache — mlxload.load_file
  vs ``mx.load`` + ``mx.eval`` — each repetition in a fresh subprocess (so allocator state and
  peak RSS are per run), alternating methods.

Usage:
    python benchmarks/bench_load.py [--size-gb 2] [--reps 5] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
from operator import itemgetter
from pathlib import Path

CACHE = Path(os.environ.get("MLXLOAD_BENCH_CACHE", Path(tempfile.gettempdir()) / "mlxload-bench"))

_CHILD = r"""
import os, sys, time
import mlx.core as mx
method, path = sys.argv[1], sys.argv[2]
import mlxload, mlxload.reader, numpy  # imports are not part of the timing
import mmap
import numpy as np
from mlxload.process_stats import peak_rss_bytes
base_rss = peak_rss_bytes()
t0 = time.perf_counter()
if method == "mx.load":
    arrays = mx.load(path)
    mx.eval(list(arrays.values()))
elif method == "mmap+mx.array":  # the alternative design: copy out of a mapping
    header = mlxload.read_header(path)
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    arrays = {
        i.name: mx.array(np.frombuffer(mapping, np.uint8, i.nbytes, i.offset))
        for i in header.tensors.values()
    }
    mx.eval(list(arrays.values()))
else:
    arrays = mlxload.load_file(path)
dt = time.perf_counter() - t0
print(dt, peak_rss_bytes(), base_rss)
"""


def _make_big(size_gb: float) -> Path:
    import mlx.core as mx

    path = CACHE / f"fp16-{size_gb:g}GB.safetensors"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        rows = 1024
        n = max(1, int(size_gb * 1e9 / (rows * 4096 * 2)))
        tmp = path.with_suffix(".tmp.safetensors")
        tensors = {f"model.layers.{i}.w": mx.random.normal((rows, 4096)).astype(mx.float16)
                   for i in range(n)}  # fmt: skip
        mx.save_safetensors(str(tmp), tensors)
        os.replace(tmp, path)
    return path


_GC_ON = "import gc; gc.enable()"
"""timeit's setup: timeit turns the garbage collector off, which flatters code that builds many
Python objects (ours) against Rust and C++ (safetensors, mx.load). Users run with it on."""


def _make_many(n: int = 5000, dtype: str = "float16") -> Path:
    import mlx.core as mx

    path = CACHE / (
        f"many-{n}.safetensors" if dtype == "float16" else f"many-{n}-{dtype}.safetensors"
    )
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.layers.{i // 5}.t{i % 5}.weight": mx.zeros((4, 8), getattr(mx, dtype))
                   for i in range(n)}  # fmt: skip
        mx.save_safetensors(str(path), tensors)
    return path


def bench_open(reps: int) -> dict:
    import mlx.core as mx
    import orjson
    import safetensors

    import mlxload

    path = _make_many()

    def st_open():
        with safetensors.safe_open(str(path), "numpy") as f:
            return list(f.keys())

    def ours_open():
        with mlxload.safe_open(path) as f:
            return f.keys()

    def paused(fn):
        """``fn`` with the collector paused, as mlxload pauses it while parsing."""

        def run():
            gc.disable()
            try:
                return fn()
            finally:
                gc.enable()

        return run

    def bare_orjson():
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            return orjson.loads(f.read(n))

    def orjson_and_extraction():
        """The floor of any orjson-based open: the parse plus the five lists a table needs,
        with no check at all."""
        obj = bare_orjson()
        obj.pop("__metadata__", None)
        entries = list(obj.values())
        offsets = list(map(itemgetter("data_offsets"), entries))
        return (
            list(obj),
            list(map(itemgetter("dtype"), entries)),
            list(map(itemgetter("shape"), entries)),
            list(map(itemgetter(0), offsets)),
            list(map(itemgetter(1), offsets)),
        )

    cases = {
        "mlxload.safe_open": ours_open,
        "mlxload.read_header": lambda: mlxload.read_header(path),
        "safetensors.safe_open": st_open,
        "mx.load (lazy)": lambda: mx.load(str(path)),
        "orjson parse only": paused(bare_orjson),
        "orjson + extraction, no checks": paused(orjson_and_extraction),
    }
    out = {}
    for name, fn in cases.items():
        times = timeit.repeat(fn, _GC_ON, number=1, repeat=max(reps * 6, 30))
        out[name] = {"min_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3}
    return out


def _model_shaped_header(kind: str) -> Path:
    """A 5,000-tensor file whose header is shaped like a real model's; its data section is a
    hole (sparse), since an open reads only the header."""
    import struct

    path = CACHE / f"header-{kind}-5000.safetensors"
    if path.exists():
        return path
    entries: list[tuple[str, str, list[int]]] = []
    layer = 0
    while len(entries) < 5000:
        p = f"model.layers.{layer}"
        if kind == "moe":  # every expert a tensor, long names
            entries += [(f"{p}.self_attn.{m}.weight", "BF16", [4096, 4096]) for m in "qkvo"]
            entries += [
                (f"{p}.{n}.weight", "BF16", [4096])
                for n in ("input_layernorm", "post_attention_layernorm")
            ]
            entries += [
                (f"{p}.mlp.experts.{e}.{m}.weight", "BF16", [1536, 4096])
                for e in range(64)
                for m in ("gate_proj", "up_proj", "down_proj")
            ]
        else:  # 4-bit dense: weight, scales and biases of each projection
            for m in (
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            ):
                entries += [
                    (f"{p}.{m}.weight", "U32", [4096, 512]),
                    (f"{p}.{m}.scales", "BF16", [4096, 64]),
                    (f"{p}.{m}.biases", "BF16", [4096, 64]),
                ]
        layer += 1
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in entries[:5000]:
        size = (4 if dtype == "U32" else 2) * shape[0] * (shape[1] if len(shape) > 1 else 1)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    os.replace(tmp, path)
    return path


def bench_open_model_shaped(reps: int) -> dict:
    """``mlxload.safe_open`` vs ``safetensors.safe_open`` and a bare orjson parse, on headers
    shaped like a MoE model's (long expert names) and a 4-bit dense model's."""
    import orjson
    import safetensors

    import mlxload

    out = {}
    for kind in ("moe", "quantized"):
        path = _model_shaped_header(kind)

        def st_open(path=path):
            with safetensors.safe_open(str(path), "numpy") as f:
                return list(f.keys())

        def ours(path=path):
            with mlxload.safe_open(path) as f:
                return f.keys()

        def parse(path=path):
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                return orjson.loads(f.read(n))

        row = {}
        for name, fn in (
            ("safetensors.safe_open", st_open),
            ("mlxload.safe_open", ours),
            ("orjson parse only", parse),
        ):
            times = timeit.repeat(fn, _GC_ON, number=1, repeat=max(reps * 6, 30))
            row[name] = statistics.median(times) * 1e3
        out[kind] = row
    return out


def bench_per_tensor(reps: int) -> dict:
    """Each of 5,000 small tensors read on its own, as a loop over ``ckpt[name]`` or
    ``get_tensor`` does: the fixed cost of one read, times 5,000; and, for scale, the ways that
    read them all at once (``list(ckpt.items())`` reads in batches)."""
    import mlx.core as mx
    import safetensors

    import mlxload

    f16, bf16 = _make_many(), _make_many(dtype="bfloat16")

    def each_in_checkpoint(path):
        ckpt = mlxload.load(path)
        return [ckpt[name] for name in ckpt]

    def each_get_tensor():
        with mlxload.safe_open(f16) as f:
            names = f.keys()
            return [f.get_tensor(name) for name in names]

    def each_safetensors_numpy():
        with safetensors.safe_open(str(f16), "numpy") as f:
            names = f.keys()
            return [f.get_tensor(name) for name in names]

    def each_mx_eval():
        arrays = mx.load(str(f16))
        for a in arrays.values():
            mx.eval(a)

    cases = {
        "mlxload.load: ckpt[name] each (f16)": lambda: each_in_checkpoint(f16),
        "mlxload.load: ckpt[name] each (bf16)": lambda: each_in_checkpoint(bf16),
        "mlxload.safe_open: get_tensor each": each_get_tensor,
        "mlxload.load: list(ckpt.items())": lambda: list(mlxload.load(f16).items()),
        "mx.load, mx.eval each": each_mx_eval,
        "mx.load, one mx.eval of all": lambda: mx.eval(list(mx.load(str(f16)).values())),
        "mlxload.load_file, all at once": lambda: mlxload.load_file(f16),
        "safetensors (numpy): get_tensor each": each_safetensors_numpy,
    }
    out = {}
    for name, fn in cases.items():
        times = timeit.repeat(fn, _GC_ON, number=1, repeat=max(reps, 3))
        out[name] = {"min_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3}
    return out


def rss_growth_on_open(path: Path, *, after: Path | None = None) -> int:
    """Peak-RSS growth of opening ``path`` (and listing its tensors) in a fresh process.

    The first open in a process also faults in orjson's and numpy's code pages, about 1.2 MB
    whatever the file's size; ``after`` names a file to open first, so that the figure is the
    open's own (the data pages it must not touch).
    """
    warm_up = f"mlxload.safe_open({str(after)!r}).keys()\n" if after else ""
    code = (
        "import mlxload, mlxload.reader, mlxload.header\n"
        "from mlxload.process_stats import peak_rss_bytes\n"
        f"{warm_up}"
        "before = peak_rss_bytes()\n"
        f"f = mlxload.safe_open({str(path)!r}); f.keys()\n"
        "print(peak_rss_bytes() - before)\n"
    )
    return int(subprocess.check_output([sys.executable, "-c", code], text=True))


def drop_page_cache() -> bool:
    """Empty the page cache (needs root and a writable /proc/sys/vm/drop_caches)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def bench_materialize(path: Path, reps: int, cold: bool = False) -> dict:
    size = path.stat().st_size
    if cold and not drop_page_cache():
        raise SystemExit("--cold needs root and a writable /proc/sys/vm/drop_caches")
    with open(path, "rb") as f:  # warm the page cache
        while not cold and f.read(64 << 20):
            pass
    runs: dict[str, list[tuple[float, int, int]]] = {
        "mx.load": [],
        "mlxload": [],
        "mmap+mx.array": [],
    }
    for _ in range(reps):
        for method in runs:
            if cold:
                drop_page_cache()
            out = subprocess.check_output(
                [sys.executable, "-c", _CHILD, method, str(path)], text=True
            ).split()
            runs[method].append((float(out[0]), int(out[1]), int(out[2])))
    result = {}
    for method, values in runs.items():
        times = [t for t, _, _ in values]
        result[method] = {
            "median_s": statistics.median(times),
            "gb_per_s": size / statistics.median(times) / 1e9,
            "spread_s": [min(times), max(times)],
            "peak_rss_bytes": max(r for _, r, _ in values),
            "rss_before_load_bytes": max(b for _, _, b in values),
        }
    result["ratio_throughput_mlxload_over_mx_load"] = (
        result["mlxload"]["gb_per_s"] / result["mx.load"]["gb_per_s"]
    )
    result["file_bytes"] = size
    result["page_cache"] = "cold (dropped before each run)" if cold else "warm"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--cold", action="store_true", help="drop the page cache before each run (needs root)"
    )
    args = parser.parse_args(argv)

    big = _make_big(args.size_gb)
    report = {
        "open_5000_tensors": bench_open(args.reps),
        "open_model_shaped_headers": bench_open_model_shaped(args.reps),
        "each_of_5000_tensors": bench_per_tensor(args.reps),
        "rss_growth_opening_big_file_bytes": rss_growth_on_open(big),
        "rss_growth_opening_big_file_after_another_bytes": rss_growth_on_open(
            big, after=_make_many(n=2)
        ),
        "materialize": bench_materialize(big, args.reps, cold=args.cold),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("open, 5,000-tensor header (ms)        min     median")
    for name, r in report["open_5000_tensors"].items():
        print(f"  {name:<30} {r['min_ms']:8.2f} {r['median_ms']:8.2f}")
    opens = report["open_5000_tensors"]
    st = opens["safetensors.safe_open"]["median_ms"]
    ours = opens["mlxload.safe_open"]["median_ms"]
    floor = opens["orjson + extraction, no checks"]["median_ms"]
    print(
        f"  mlxload / safetensors: {ours / st:.2f}x (orjson + extraction alone: {floor / st:.2f}x)"
    )
    for kind, row in report["open_model_shaped_headers"].items():
        st = row["safetensors.safe_open"]
        print(
            f"  {kind}-shaped header (median ms): safetensors {st:.2f}, mlxload "
            f"{row['mlxload.safe_open']:.2f} ({row['mlxload.safe_open'] / st:.2f}x), orjson "
            f"parse alone {row['orjson parse only']:.2f} ({row['orjson parse only'] / st:.2f}x)"
        )
    print("\n5,000 small tensors, one at a time and all at once (ms)    min     median")
    for name, r in report["each_of_5000_tensors"].items():
        print(f"  {name:<44} {r['min_ms']:8.1f} {r['median_ms']:8.1f}")
    print(f"RSS growth opening a {big.stat().st_size / 1e9:.1f} GB file: "
          f"{report['rss_growth_opening_big_file_bytes'] / 1e6:.2f} MB as the process's first "
          f"open, {report['rss_growth_opening_big_file_after_another_bytes'] / 1e6:.2f} MB "
          "after opening a 2-tensor file")  # fmt: skip
    m = report["materialize"]
    gb = m["file_bytes"] / 1e9
    print(f"\nmaterialize all ({gb:.2f} GB fp16, {m['page_cache']} page cache, fresh process each)")
    for name in ("mx.load", "mlxload", "mmap+mx.array"):
        r = m[name]
        grown = (r["peak_rss_bytes"] - r["rss_before_load_bytes"]) / m["file_bytes"]
        print(f"  {name:<14} {r['gb_per_s']:6.2f} GB/s  median {r['median_s']:.3f}s "
              f"spread {r['spread_s'][0]:.3f}-{r['spread_s'][1]:.3f}s  "
              f"peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB "
              f"(+{grown:.0%} of the file over the process before loading)")  # fmt: skip
    print(f"  throughput mlxload / mx.load: {m['ratio_throughput_mlxload_over_mx_load']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
