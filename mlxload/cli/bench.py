"""``mlxload bench [MODEL]``: time to first token, mlxload vs mx.load vs mlx_lm.load.

Without MODEL it benchmarks a synthetic mlx-lm checkpoint (generated once into a cache).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mlxload.backend import FLOAT_DTYPES, mlx_affine_bits
    from mlxload.bench.worker import LOADERS
    from mlxload.synthetic import DEFAULT_SIZE, SIZES

    bits = list(mlx_affine_bits())  # mlx-lm quantizes the synthetic model: MLX must take it

    parser.add_argument(
        "model", nargs="?", help="checkpoint directory or hf://org/repo (default: synthetic)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--reps", type=int, default=3, help="repetitions per measurement (default 3)"
    )
    parser.add_argument(
        "--size",
        choices=list(SIZES),
        default=None,
        help=f"synthetic model size (default {DEFAULT_SIZE}, about 3 minutes on 2 CPU cores; "
        "tiny takes seconds); not with MODEL",
    )
    parser.add_argument(
        "--bits",
        type=int,
        choices=bits,
        default=None,
        help="synthetic model quantization bits (default 4); not with MODEL",
    )
    parser.add_argument(
        "--prompt",
        default=None,
        help="fixed prompt for TTFT (default: 'Tell me a story about a small robot.')",
    )
    parser.add_argument(
        "--dtype",
        choices=list(FLOAT_DTYPES),
        default=None,
        help="mlxload compute dtype (default: auto)",
    )
    parser.add_argument(
        "--loaders",
        nargs="+",
        choices=LOADERS,
        default=list(LOADERS),
        help="loaders to run (default: all)",
    )
    parser.add_argument(
        "--cold", action="store_true", help="drop the page cache before each run (needs root)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds allowed per measurement (default 900)",
    )


def _model(args: argparse.Namespace) -> tuple[Path, dict | None]:
    if args.model is None:
        from mlxload.synthetic import DEFAULT_SIZE, spec_for, synthetic_checkpoint

        bits = 4 if args.bits is None else args.bits
        spec = spec_for(args.size or DEFAULT_SIZE, bits=bits)
        print(
            f"synthetic {spec.name} model, {bits}-bit (generated on first use, then cached)",
            file=sys.stderr,
        )
        return synthetic_checkpoint(spec), asdict(spec)
    from mlxload.hub.locate import resolve

    local = resolve(args.model)
    model = Path(args.model) if local is None else local
    _check_model(model)
    return model, None


def _check_model(model: Path) -> None:
    """Fail before any worker runs when ``model`` is no mlx-lm checkpoint directory."""
    from mlxload.errors import MlxloadError
    from mlxload.header import read_header
    from mlxload.shards import checkpoint_files

    if not model.exists():
        raise MlxloadError(f"{model}: no such file or directory")
    if not model.is_dir():
        raise MlxloadError(
            f"{model}: not a directory; bench needs a model directory (config.json, weights, "
            "tokenizer)"
        )
    if not (model / "config.json").is_file():
        raise MlxloadError(
            f"{model}: no config.json; bench needs a model directory as mlx-lm loads it "
            "(config.json, weights, tokenizer)"
        )
    try:
        config = json.loads((model / "config.json").read_bytes())  # as mlx-lm reads it
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise MlxloadError(f"{model / 'config.json'}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise MlxloadError(f"{model / 'config.json'}: not a JSON object")
    from mlxload.model_recipe import has_tokenizer_files, no_tokenizer_message

    try:
        files = checkpoint_files(model)
    except FileNotFoundError as e:
        raise MlxloadError(str(e)) from None
    for shard in files.files:  # every header, so a damaged shard is one line, not N workers'
        read_header(shard)
    if not has_tokenizer_files(model):  # else every loader fails after its weights are read
        raise MlxloadError(no_tokenizer_message(model))


def _usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with option values no run could use, or None."""
    if args.reps < 1:
        return "--reps must be at least 1"
    if args.timeout is not None and not 0 < args.timeout < math.inf:  # (nan fails it too)
        return "--timeout must be a positive number of seconds"
    if args.model == "":  # Path("") is the current directory: an unset $MODEL
        return "MODEL is empty; give a model directory or hf://org/repo (or leave it out)"
    if args.prompt is not None and not args.prompt.strip():
        return "--prompt is empty; give some text (or leave it out)"
    if args.model is not None and (args.size is not None or args.bits is not None):
        return "--size and --bits describe the synthetic model; they don't apply to MODEL"
    return None


def run(args: argparse.Namespace) -> int:
    from mlxload.bench import DEFAULT_PROMPT, BenchOptions, format_result, run_bench

    usage = _usage_error(args)
    if usage is not None:
        print(f"mlxload bench: error: {usage}", file=sys.stderr)
        return 2
    model, synthetic = _model(args)
    options = BenchOptions(
        model=model,
        reps=args.reps,
        prompt=args.prompt or DEFAULT_PROMPT,
        loaders=args.loaders,
        dtype=args.dtype,
        cold=args.cold,
        timeout=args.timeout,
        synthetic=synthetic,
    )
    quiet = args.json or not sys.stderr.isatty()
    result = run_bench(options, progress=None if quiet else lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result))
    return 1 if result["errors"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mlxload bench`` with its own argument list; returns the exit code."""
    from mlxload.cli._main import verb_main

    return verb_main("bench", add_arguments, run, argv, __doc__)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
