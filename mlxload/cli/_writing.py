"""Shared pieces of the ``merge``, ``split`` and ``align`` verbs."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence

from mlxload.cli._main import verb_main
from mlxload.cli._text import printable

__all__ = ["add_common", "progress_for", "report", "run_main", "show_progress"]


def add_common(parser: argparse.ArgumentParser, *, on_conflict: bool = False) -> None:
    """``--force``, ``--progress/--no-progress`` and, for merging verbs, ``--on-conflict``."""
    parser.add_argument("--force", action="store_true", help="replace existing outputs")
    if on_conflict:
        parser.add_argument(
            "--on-conflict",
            choices=("error", "first", "last"),
            default="error",
            help="shards disagreeing on a __metadata__ key: fail (default) or keep first/last",
        )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars (ours and the Hub download's): ``--progress`` /
    ``--no-progress``, else when stderr is a terminal."""
    return args.progress if args.progress is not None else sys.stderr.isatty()


def progress_for(args: argparse.Namespace, desc: str):
    """A progress bar context (or a null context yielding None) as the flags ask."""
    if not show_progress(args):
        return contextlib.nullcontext(None)
    from mlxload.writer.progress import ProgressBar

    return ProgressBar(desc)


def report(verb: str, result) -> None:
    """Print what a write did to stdout."""
    for path in result.outputs:
        print(f"wrote {printable(path)}")
    if result.index is not None:
        print(f"wrote {printable(result.index)}")
    for path in result.unchanged:
        print(f"unchanged (already aligned) {printable(path)}")
    for path in result.removed:
        print(f"removed {printable(path)} (a file of the checkpoint this replaced)")
    if result.companions:
        names = ", ".join(printable(p.name) for p in result.companions)
        print(f"copied {names} alongside")
    line = f"{verb}: {result.tensors} tensors, {result.total_bytes:,} bytes"
    if result.resumed_tensors:
        line += (
            f" (resumed: {result.resumed_tensors} tensors / {result.resumed_bytes:,} bytes "
            "were already written)"
        )
    print(line)


def run_main(
    prog: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv`` for one verb and run it under the command line's one error handler."""
    return verb_main(prog, add_arguments, run, argv)
