"""SIGINT as an interactive terminal gives it, for tests that press Ctrl-C.

A pytest started in the background (``cmd &``, ``nohup``) inherits SIGINT ignored, and Python
then leaves it so: ``_thread.interrupt_main()`` does nothing and a child sent SIGINT doesn't
stop. A Ctrl-C test then fails, or waits for ever on a server that never answers.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["sigint_default", "sigint_handled"]


def sigint_default() -> None:
    """``preexec_fn`` for a child that must stop on SIGINT (Python installs its handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def sigint_handled() -> Iterator[None]:
    """Python's own SIGINT handler (``KeyboardInterrupt``) in this process for a while."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
