"""Progress display for the CLI: a tqdm bar when tqdm is installed, else a plain stderr line."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """A ``progress(done, total, name)`` callable that draws on a stream; use as a context.

    Args:
        desc: Label in front of the bar.
        stream: Where to draw (stderr by default).
        min_interval: Seconds between redraws of the plain line.
    """

    def __init__(self, desc: str, stream: TextIO | None = None, min_interval: float = 0.5) -> None:
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self._bar = None
        self._last = 0.0
        self._shown = False
        self._tried_tqdm = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self._tried_tqdm:
            self._tried_tqdm = True
            self._bar = self._make_tqdm(total, done)
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            return
        now = time.monotonic()
        if now - self._last < self.min_interval and done < total:
            return
        self._last = now
        pct = 100.0 * done / total if total else 100.0
        self.stream.write(f"\r{self.desc}: {pct:5.1f}% {done / 1e6:,.0f}/{total / 1e6:,.0f} MB")
        self.stream.flush()
        self._shown = True

    def _make_tqdm(self, total: int, initial: int):
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(
            total=total,
            initial=initial,
            desc=self.desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self.stream,
            leave=True,
        )

    def close(self) -> None:
        """Finish the line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._shown:
            self.stream.write("\n")
            self.stream.flush()
        self._shown = False
        self._tried_tqdm = True
