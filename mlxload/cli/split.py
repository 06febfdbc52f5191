"""``mlxload split SRC OUTDIR --max-shard-size 5GB``: aligned shards plus an index."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mlxload.cli._writing import add_common, progress_for, report, run_main, show_progress

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mlxload split``."""
    parser.add_argument("src", metavar="SRC", help="file, directory, index or hf://org/repo")
    parser.add_argument("out_dir", metavar="OUTDIR", help="output directory")
    parser.add_argument(
        "--max-shard-size",
        default="5GB",
        type=_size,
        help="largest shard file, e.g. 5GB, 500MB, 1.5GiB (default 5GB); a tensor that doesn't "
        "fit beside the 16 KiB header gets a shard of its own, larger",
    )
    add_common(parser, on_conflict=True)


def _size(text: str) -> str:
    """``--max-shard-size`` checked while parsing, so a bad value is a usage error (exit 2)."""
    from mlxload.writer.errors import InvalidSizeError
    from mlxload.writer.sizes import parse_size

    try:
        parse_size(text)
    except InvalidSizeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def run(args: argparse.Namespace) -> int:
    """Split; returns the exit code."""
    from mlxload.writer import split

    with progress_for(args, "split") as bar:
        result = split(
            args.src,
            args.out_dir,
            max_shard_size=args.max_shard_size,
            force=args.force,
            on_conflict=args.on_conflict,
            progress=bar,
            download_progress=show_progress(args),
        )
    report("split", result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlxload.cli.split``."""
    return run_main("split", add_arguments, run, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
