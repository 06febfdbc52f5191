"""Sets of byte ranges of a file: which parts of a partly fetched file hold real bytes.

Example:
    >>> have = ByteRanges()
    >>> have.add(0, 100); have.add(100, 150); have.add(300, 400)
    >>> list(have), have.total
    ([(0, 150), (300, 400)], 250)
    >>> have.covers(10, 150), have.covers(140, 310)
    (True, False)
    >>> have.around(120), have.around(200)
    ((0, 150), None)
    >>> have.missing([(0, 500)])
    [(150, 300), (400, 500)]
    >>> coalesce([(0, 10), (12, 20), (100, 110)], gap=4)
    [(0, 20), (100, 110)]
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator

__all__ = ["ByteRanges", "coalesce", "split_long"]


class ByteRanges:
    """Sorted, disjoint ``[start, end)`` intervals; adds and queries are thread-safe."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._lock = threading.Lock()
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        """Include ``[start, end)`` (merged with the intervals it touches)."""
        if end <= start:
            return
        with self._lock:
            lo = bisect.bisect_left(self._ends, start)  # first interval ending at or after start
            hi = bisect.bisect_right(self._starts, end)  # past the last one starting by end
            if lo < hi:
                start = min(start, self._starts[lo])
                end = max(end, self._ends[hi - 1])
            self._starts[lo:hi] = [start]
            self._ends[lo:hi] = [end]

    def covers(self, start: int, end: int) -> bool:
        """Whether every byte of ``[start, end)`` is in the set (an empty range always is)."""
        if end <= start:
            return True
        with self._lock:
            i = bisect.bisect_right(self._starts, start) - 1
            return i >= 0 and self._ends[i] >= end

    def around(self, pos: int) -> tuple[int, int] | None:
        """The interval holding byte ``pos``, or None."""
        with self._lock:
            i = bisect.bisect_right(self._starts, pos) - 1
            if i >= 0 and pos < self._ends[i]:
                return self._starts[i], self._ends[i]
            return None

    def missing(self, ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """The parts of ``ranges`` not in the set, sorted and merged."""
        out: list[tuple[int, int]] = []
        with self._lock:
            starts, ends, n = self._starts, self._ends, len(self._starts)
            for start, end in coalesce(ranges, gap=0):
                pos = start
                i = bisect.bisect_right(ends, start)  # first interval ending past `start`
                while pos < end:
                    if i < n and starts[i] <= pos:  # interval i holds pos
                        pos = ends[i]
                        i += 1
                    else:
                        gap_end = min(starts[i], end) if i < n else end
                        out.append((pos, gap_end))
                        pos = gap_end
        return out

    @property
    def total(self) -> int:
        """Bytes in the set."""
        with self._lock:
            return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        with self._lock:
            return iter(list(zip(self._starts, self._ends, strict=True)))

    def __repr__(self) -> str:
        return f"ByteRanges({list(self)})"


def coalesce(ranges: Iterable[tuple[int, int]], *, gap: int) -> list[tuple[int, int]]:
    """``ranges`` sorted, with those that overlap or lie at most ``gap`` bytes apart merged.

    Fetching a hole of up to ``gap`` bytes costs less than one more request.
    """
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start - out[-1][1] <= gap:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def split_long(ranges: Iterable[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """``ranges`` cut into pieces of at most ``limit`` bytes (so they can be fetched in
    parallel, and a dropped connection costs at most one piece)."""
    return [(s, min(s + limit, end)) for start, end in ranges for s in range(start, end, limit)]
