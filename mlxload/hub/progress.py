"""One thread-safe byte progress bar for a whole download (tqdm, as huggingface_hub shows it)."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

__all__ = ["ByteProgress", "progress_enabled"]

_TRUE = {"1", "on", "yes", "true"}


def progress_enabled(progress: bool | None) -> bool:
    """Whether to draw bars: ``progress`` if given; else only on a terminal (a log file or a
    pipe would get every redraw), and not when huggingface_hub's bars are disabled.

    ``HF_HUB_DISABLE_PROGRESS_BARS`` is read now (not only at import), and
    ``huggingface_hub.utils.disable_progress_bars()`` is honoured too.
    """
    if progress is not None:
        return progress
    env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    if env is not None and env.strip().lower() in _TRUE:
        return False
    if not _stderr_is_a_terminal():
        return False
    if env is not None:
        return True
    from huggingface_hub.utils import are_progress_bars_disabled

    return not are_progress_bars_disabled()


def _stderr_is_a_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


class ByteProgress:
    """Counts bytes from many threads into one tqdm bar (or nothing when disabled).

    Attributes:
        done: Bytes accounted for so far (present on disk or received).
    """

    def __init__(self, *, total: int, desc: str, enabled: bool) -> None:
        self.done = 0
        self._lock = threading.Lock()
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=True
            )

    def update(self, n: int) -> None:
        """Account for ``n`` more bytes (negative when a partial file was discarded)."""
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)

    def add_total(self, n: int) -> None:
        """Grow the bar's total by ``n`` bytes."""
        if self._bar is not None:
            with self._lock:
                self._bar.total = (self._bar.total or 0) + n
                self._bar.refresh()

    def file_done(self, count: int, total: int) -> None:
        """Show how many files are finished."""
        if self._bar is not None:
            with self._lock:
                self._bar.set_postfix_str(f"{count}/{total} files", refresh=False)

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()
