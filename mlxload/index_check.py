"""Checking an index before MLX applies it to a tensor.

MLX checks little of an index itself: an index array out of range reads memory outside the
array (garbage, or a crash), an int out of range fails with "Cannot squeeze axis", and numpy
ints and arrays, which users pass, aren't accepted at all. :func:`checked_index` refuses
what would go wrong, with a message the caller makes name its tensor, and converts the rest.

Example:
    >>> def fail(problem):
    ...     raise IndexError(problem)
    >>> checked_index((slice(None), [0, 3]), (5, 3), fail)
    Traceback (most recent call last):
    ...
    IndexError: index 3 is out of bounds for axis 1 with size 3
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import mlx.core as mx
import numpy as np

__all__ = ["checked_index"]

Fail = Callable[[str], NoReturn]


def checked_index(index: tuple, shape: tuple[int, ...], fail: Fail) -> tuple:
    """``index`` for a tensor of ``shape``, checked, with numpy ints and arrays made MLX's.

    Args:
        index: The items of ``tensor[...]``: ints, slices, ``None``, ``...``, integer lists
            or numpy/MLX arrays.
        shape: The tensor's shape.
        fail: Called with what is wrong; it must raise.

    Returns:
        The index, ready for MLX.
    """
    out = []
    for item in index:
        if isinstance(item, np.ndarray) and item.ndim == 0:
            item = item[()]  # numpy reads a 0-d array as its one value
        if isinstance(item, (list, np.ndarray, mx.array)):
            item = _integer_array(item, fail)
        elif isinstance(item, np.integer):
            item = int(item)
        elif isinstance(item, slice):
            _check_slice(item, fail)
        elif not (
            item is None
            or item is Ellipsis
            or isinstance(item, slice)
            or (isinstance(item, int) and not isinstance(item, bool))
        ):
            fail(
                f"can't index with {type(item).__name__} {item!r:.40}; use ints, slices, "
                "..., None, or integer lists/arrays"
            )
        out.append(item)
    if out.count(Ellipsis) > 1:
        fail("an index can have only one ellipsis (...)")
    axes = sum(item is not None and item is not Ellipsis for item in out)
    if axes > len(shape):
        fail(f"{axes} indices for {len(shape)} dims")
    _check_bounds(out, shape, axes, fail)
    return tuple(out)


def _check_slice(item: slice, fail: Fail) -> None:
    for part in (item.start, item.stop, item.step):
        if part is not None and not (
            isinstance(part, (int, np.integer)) and not isinstance(part, bool)
        ):
            fail(f"{item!r} has a bound that is not an integer")
    if item.step == 0:
        fail(f"{item!r} has step 0")


def _check_bounds(index: list, shape: tuple[int, ...], axes: int, fail: Fail) -> None:
    """Every int and index array within the axis it indexes; every slice made the same
    selection with bounds inside the axis (in place)."""
    axis = 0
    for position, item in enumerate(index):
        if item is None:
            continue
        if item is Ellipsis:
            axis += len(shape) - axes
            continue
        size = shape[axis]
        if isinstance(item, slice):
            index[position] = _bounded_slice(item, size)
            axis += 1
            continue
        if isinstance(item, int):
            low = high = item
        elif isinstance(item, mx.array) and item.size:
            low, high = mx.min(item).item(), mx.max(item).item()
        else:
            axis += 1
            continue
        if low < -size or high >= size:
            bad = low if low < -size else high
            fail(f"index {bad} is out of bounds for axis {axis} with size {size}")
        axis += 1


def _bounded_slice(item: slice, size: int) -> slice:
    """``item``'s selection on an axis of ``size`` with every bound and step inside the axis.

    MLX takes only 32-bit slice bounds and gets larger steps wrong (``[:, ::-2**31]`` came
    back empty, numpy gives one column); a step at least the axis size selects one element
    at most, so it becomes a step of 1.
    """
    start, stop, step = item.indices(size)
    count = len(range(start, stop, step))
    if count == size and (step == 1 or count <= 1):
        return slice(None)  # the whole axis, however it was spelled (``0:``, ``:n``, ``::-1``
        # of one element)
    if count <= 1:
        return slice(start, start + count)
    last = start + (count - 1) * step
    if step > 0:
        return slice(start, last + 1, step)
    return slice(start, last - 1 if last > 0 else None, step)  # -1 would mean the end


def _integer_array(item: list | np.ndarray | mx.array, fail: Fail) -> mx.array:
    """An index array as MLX takes it; booleans (masks, which MLX can't index with yet) and
    floats are refused."""
    if isinstance(item, mx.array):
        ok, dtype = mx.issubdtype(item.dtype, mx.integer), str(item.dtype)
    else:
        try:
            item = np.asarray(item) if len(item) else np.zeros(0, np.int64)
        except ValueError:  # ragged nesting
            item = np.asarray(item, dtype=object)
        ok, dtype = np.issubdtype(item.dtype, np.integer), str(item.dtype)
    if not ok:
        fail(
            f"can't index with an array of {dtype}; use integer indices (boolean masks are "
            "not supported by MLX)"
        )
    return item if isinstance(item, mx.array) else mx.array(item)
