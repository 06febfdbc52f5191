"""One benchmark measurement, run in a fresh process: ``python -m mlxload.bench.worker``.

Prints one JSON object on the last line of stdout. Imports (mlx, mlx-lm, mlxload) happen before
any clock starts, so every loader is timed on the same footing.

Tasks:
    weights: time to open the checkpoint (headers) and to materialize every tensor.
    ttft: wall time from the start of loading to the first generated token, split into
        load / prefill (all prompt tokens but the last, into the KV cache) / first decode (the
        last prompt token -> first token), exactly as ``mlx_lm.generate_step`` runs them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlxload.process_stats import peak_rss_bytes

__all__ = ["LOADERS", "TASKS", "main"]

LOADERS = ("mlxload", "mx.load", "mlx_lm", "mlx_lm+dtype")
"""``mlx_lm+dtype`` is ``mlx_lm.load`` followed by ``set_dtype`` to mlxload's compute dtype."""
TASKS = ("weights", "ttft")


def _shards(path: Path) -> list[Path]:
    from mlxload.shards import checkpoint_files

    return list(checkpoint_files(path).files)


def _weights(loader: str, path: Path) -> dict[str, Any]:
    import mlx.core as mx

    t0 = time.perf_counter()
    if loader == "mlxload":
        import mlxload

        ckpt = mlxload.load(path)
        n = len(ckpt)
        t1 = time.perf_counter()
        arrays = ckpt.materialize()
    elif loader == "mx.load":
        arrays = {}
        for file in _shards(path):
            arrays.update(mx.load(str(file)))
        n = len(arrays)
        t1 = time.perf_counter()
        mx.eval(list(arrays.values()))
    else:  # mlx_lm: no separate open; builds the model and evaluates its weights
        from mlx_lm.utils import load_model

        t1 = t0
        model, _ = load_model(path)
        n = len(model.parameters())
        arrays = {}
    t2 = time.perf_counter()
    return {
        "open_s": t1 - t0 if loader != "mlx_lm" else None,
        "materialize_s": t2 - t1,
        "tensors": n,
        "bytes": sum(a.nbytes for a in arrays.values()) or None,
    }


def _load_for_ttft(loader: str, path: Path, dtype: str | None) -> tuple[Any, Any, dict]:
    import mlx.core as mx

    if loader == "mlxload":
        from mlxload.model import load_model

        model, tokenizer, _ = load_model(path, dtype=dtype)
        report = model.load_report
        return (
            model,
            tokenizer,
            {"compute_dtype": report.compute_dtype or "as stored", "zero_copy": report.zero_copy},
        )
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(path))
    if loader == "mlx_lm+dtype":
        from mlxload.backend import dtype_name, resolve_compute_dtype

        target = resolve_compute_dtype(dtype)
        if target is not None:
            model.set_dtype(target)
            mx.eval(model.parameters())
        return model, tokenizer, {"compute_dtype": dtype_name(target)}
    stored = {v.dtype for _, v in _float_params(model)}
    return model, tokenizer, {"compute_dtype": ",".join(sorted(str(d)[9:] for d in stored))}


def _float_params(model: Any) -> list:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    return [
        (k, v) for k, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating)
    ]


def _ttft(loader: str, path: Path, prompt: str, dtype: str | None) -> dict[str, Any]:
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    t0 = time.perf_counter()
    model, tokenizer, extra = _load_for_ttft(loader, path, dtype)
    ids = tokenizer.encode(prompt)
    cache = make_prompt_cache(model)
    tokens = mx.array(ids)
    t1 = time.perf_counter()
    if len(ids) > 1:
        model(tokens[None, :-1], cache=cache)
        mx.eval([c.state for c in cache])
    t2 = time.perf_counter()
    logits = model(tokens[None, -1:], cache=cache)
    first = int(mx.argmax(logits[0, -1]).item())
    t3 = time.perf_counter()
    return {
        "load_s": t1 - t0,
        "prefill_s": t2 - t1,
        "first_decode_s": t3 - t2,
        "ttft_s": t3 - t0,
        "prompt_tokens": len(ids),
        "first_token": first,
        **extra,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run one measurement and print its JSON result."""
    p = argparse.ArgumentParser(prog="python -m mlxload.bench.worker")
    p.add_argument("task", choices=TASKS)
    p.add_argument("loader", choices=LOADERS)
    p.add_argument("model", type=Path)
    p.add_argument("--prompt", default="hello")
    p.add_argument("--dtype", default=None)
    args = p.parse_args(argv)
    # Import everything a loader needs before the clock starts (all loaders pay the same).
    import mlx.core as mx  # noqa: F401
    import mlx_lm.utils  # noqa: F401
    from mlx_lm.models.cache import make_prompt_cache  # noqa: F401

    import mlxload.checkpoint
    import mlxload.model  # noqa: F401

    baseline = peak_rss_bytes()  # the interpreter and imports, before any loading
    if args.task == "weights":
        result = _weights(args.loader, args.model)
    else:
        result = _ttft(args.loader, args.model, args.prompt, args.dtype)
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["baseline_rss_bytes"] = baseline
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
