"""The one error handler of the command line, shared by ``mlxload VERB`` and every verb's
own ``main`` (``python -m mlxload.cli.VERB``), so both print the same lines and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence

from mlxload.cli._text import printable
from mlxload.errors import MlxloadError

__all__ = ["RESUMABLE", "SIGPIPE_EXIT", "Terminated", "run_verb", "verb_main", "write_out"]

RESUMABLE = frozenset({"merge", "split", "align", "download"})
"""Verbs whose interrupted work a rerun of the same command continues."""


def run_verb(verb: str, run: Callable[[argparse.Namespace], int | None], args) -> int:
    """Run one verb and turn its failures into one line on stderr and an exit code.

    An :class:`~mlxload.errors.MlxloadError` or ``OSError`` prints
    ``mlxload VERB: error: MESSAGE`` and returns 1; Ctrl-C prints ``mlxload VERB: interrupted``
    (saying how to resume for :data:`RESUMABLE` verbs) and returns 130; a reader that closed
    the output pipe early (``mlxload inspect X | head``) ends it quietly with 141. ``kill``
    (SIGTERM) stops it as Ctrl-C does, so its work is kept for a rerun too, and returns 143.
    """
    if sys.stdout is None:  # started with stdout closed (`cmd >&-`): its output goes nowhere
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the rest of the process)
    try:
        with _sigterm_as_interrupt(), _warnings_as_lines(verb):
            code = int(run(args) or 0)
        sys.stdout.flush()  # output that fit in the buffer meets a closed pipe only here
        return code
    except BrokenPipeError:
        return _output_closed()
    except (MlxloadError, OSError) as e:
        line = printable(e) if isinstance(e, MlxloadError) else _os_error_line(e)
        print(f"mlxload {verb}: error: {line}", file=sys.stderr)
        for note in getattr(e, "__notes__", ()):  # e.g. what a rerun will do
            print(f"  {printable(note)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        hint = " (run the same command again to resume)" if verb in RESUMABLE else ""
        terminated = isinstance(e, Terminated)
        print(f"mlxload {verb}: {'terminated' if terminated else 'interrupted'}{hint}",
              file=sys.stderr)  # fmt: skip
        for note in getattr(e, "__notes__", ()):  # e.g. where the partial output is
            print(f"  {printable(note)}", file=sys.stderr)
        return 128 + signal.SIGTERM if terminated else 130


def write_out(text: str, chunk: int = 1 << 16) -> None:
    """Write ``text`` to stdout in pieces: one large write that a closed pipe cuts short is
    reported as a short write and its ``BrokenPipeError`` lost (CPython's buffered writer), so
    ``mlxload inspect --json | head`` exited 0 instead of :data:`SIGPIPE_EXIT`."""
    for start in range(0, len(text), chunk):
        sys.stdout.write(text[start : start + chunk])


def _os_error_line(e: OSError) -> str:
    """``PATH: reason`` rather than Python's ``[Errno 13] Permission denied: 'PATH'``."""
    if e.filename is None or not e.strerror:
        return printable(e)
    line = f"{e.filename}: {e.strerror}"
    if isinstance(e, PermissionError):
        line += " (check the permissions of the file and its directories)"
    return printable(line)


@contextlib.contextmanager
def _warnings_as_lines(verb: str) -> Iterator[None]:
    """Warnings print as ``mlxload VERB: warning: MESSAGE``, not as Python's
    ``FILE:LINE: UserWarning: ...`` followed by a line of mlxload's source."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"mlxload {verb}: warning: {printable(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be: the writers keep their work for a rerun on a
    ``KeyboardInterrupt``, and Python's default SIGTERM kills without any cleanup."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a verb runs, SIGTERM raises :class:`Terminated` (only where SIGTERM still has its
    default action, and only in the main thread, which alone may set handlers)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


SIGPIPE_EXIT = 128 + 13
"""Exit status when stdout's reader went away: what a shell reports for cat or git killed by
SIGPIPE, so ``set -o pipefail`` scripts see the same status from mlxload as from them."""


def _output_closed() -> int:
    """Stop writing to a pipe whose reader is gone, quietly, and return :data:`SIGPIPE_EXIT`."""
    # Whatever is still buffered would fail again at interpreter exit ("Exception ignored
    # ... BrokenPipeError"); pointing stdout at /dev/null lets that last flush succeed.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no real file (captured in tests): nothing to do
        pass
    return SIGPIPE_EXIT


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
