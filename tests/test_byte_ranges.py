"""ByteRanges against the plainest model of it: a Python set of byte offsets."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from mlxload.byte_ranges import ByteRanges, coalesce, split_long

span = st.tuples(st.integers(0, 200), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1]))


def _bytes(ranges) -> set[int]:
    return {i for s, e in ranges for i in range(s, e)}


@settings(max_examples=300, deadline=None)
@given(added=st.lists(span, max_size=12), queries=st.lists(span, max_size=6))
def test_byte_ranges_match_a_set_of_offsets(added, queries):
    have = ByteRanges(added)
    model = _bytes(added)
    intervals = list(have)
    assert _bytes(intervals) == model and have.total == len(model)
    assert all(s < e for s, e in intervals)
    assert all(a[1] < b[0] for a, b in pairwise(intervals))  # disjoint, not touching
    for s, e in queries:
        assert have.covers(s, e) == (set(range(s, e)) <= model)
    missing = have.missing(queries)
    assert _bytes(missing) == _bytes(queries) - model
    assert missing == coalesce(missing, gap=0)  # sorted and merged


@given(ranges=st.lists(span, max_size=10), gap=st.integers(0, 30))
def test_coalesce_keeps_every_byte_and_leaves_only_wide_holes(ranges, gap):
    merged = coalesce(ranges, gap=gap)
    tight = coalesce(ranges, gap=0)
    assert _bytes(tight) == _bytes(ranges)
    small_holes = [(a[1], b[0]) for a, b in pairwise(tight) if b[0] - a[1] <= gap]
    assert _bytes(merged) == _bytes(ranges) | _bytes(small_holes)
    assert all(b[0] - a[1] > gap for a, b in pairwise(merged))


def test_split_long_cuts_at_the_limit():
    assert split_long([(0, 10), (20, 25)], 4) == [(0, 4), (4, 8), (8, 10), (20, 24), (24, 25)]
