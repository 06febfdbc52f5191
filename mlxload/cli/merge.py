"""``mlxload merge SRC OUT``: one aligned safetensors file from a sharded checkpoint."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mlxload.cli._writing import add_common, progress_for, report, run_main, show_progress

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mlxload merge``."""
    parser.add_argument("src", metavar="SRC", help="file, directory, index or hf://org/repo")
    parser.add_argument(
        "out",
        metavar="OUT",
        help="output file (NAME.safetensors), or a directory (OUTDIR/: model.safetensors there, "
        "with the model's config.json and tokenizer)",
    )
    add_common(parser, on_conflict=True)


def run(args: argparse.Namespace) -> int:
    """Merge; returns the exit code."""
    from mlxload.writer import merge

    with progress_for(args, "merge") as bar:
        result = merge(
            args.src,
            args.out,
            force=args.force,
            on_conflict=args.on_conflict,
            progress=bar,
            download_progress=show_progress(args),
        )
    report("merge", result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlxload.cli.merge``."""
    return run_main("merge", add_arguments, run, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
