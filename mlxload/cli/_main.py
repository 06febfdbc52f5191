"""The one error handler of the command line, shared by ``mlxload VERB`` and every verb's
own ``main`` (``python -m mlxload.cli.VERB``), so both print the same lines and exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from mlxload.errors import MlxloadError

__all__ = ["RESUMABLE", "run_verb", "verb_main"]

RESUMABLE = frozenset({"merge", "split", "align", "download"})
"""Verbs whose interrupted work a rerun of the same command continues."""


def run_verb(verb: str, run: Callable[[argparse.Namespace], int | None], args) -> int:
    """Run one verb and turn its failures into one line on stderr and an exit code.

    An :class:`~mlxload.errors.MlxloadError` or ``OSError`` prints
    ``mlxload VERB: error: MESSAGE`` and returns 1; Ctrl-C prints ``mlxload VERB: interrupted``
    (saying how to resume for :data:`RESUMABLE` verbs) and returns 130.
    """
    try:
        return int(run(args) or 0)
    except (MlxloadError, OSError) as e:
        print(f"mlxload {verb}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = " (run the same command again to resume)" if verb in RESUMABLE else ""
        print(f"mlxload {verb}: interrupted{hint}", file=sys.stderr)
        return 130


def verb_main(
    verb: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
    description: str | None = None,
) -> int:
    """A verb's own ``main``: parse ``argv`` as ``mlxload VERB`` would, then :func:`run_verb`."""
    parser = argparse.ArgumentParser(prog=f"mlxload {verb}", description=description)
    add_arguments(parser)
    return run_verb(verb, run, parser.parse_args(argv))
