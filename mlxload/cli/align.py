"""``mlxload align SRC [OUT]``: rewrite a checkpoint so every tensor is zero-copy ready."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mlxload.cli._writing import add_common, progress_for, report, run_main, show_progress

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mlxload align``."""
    parser.add_argument("src", metavar="SRC", help="file, directory, index or hf://org/repo")
    parser.add_argument(
        "out",
        metavar="OUT",
        nargs="?",
        default=None,
        help="output file or directory (default: rewrite SRC in place, atomically)",
    )
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    """Align; returns the exit code."""
    from mlxload.writer import align, alignment_report

    with progress_for(args, "align") as bar:
        result = align(
            args.src,
            args.out,
            force=args.force,
            progress=bar,
            download_progress=show_progress(args),
        )
    report("align", result)
    target = args.out if args.out is not None else args.src
    if result.outputs or result.unchanged:
        print(alignment_report(_checkpoint_of(target, result)).verdict())
    return 0


def _checkpoint_of(target: str, result) -> str:
    """What to report on: the index when one was written, else the target path."""
    if result.index is not None:
        return str(result.index)
    return str(result.outputs[0]) if len(result.outputs) == 1 else target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlxload.cli.align``."""
    return run_main("align", add_arguments, run, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
