"""MLX arrays from bytes in host memory: one copy, by ``mx.array``, with nothing left to evaluate.

Reading a small tensor is dominated by fixed costs, and the largest is an MLX evaluation (a
round trip to MLX's stream thread: 8-80 us here). ``mx.array`` of a numpy array copies the
bytes at once and needs none, for the dtypes numpy has and MLX keeps. Two need more:

* ``bfloat16``, which numpy lacks: the bytes are exported as ``uint16`` over DLPack with the
  dtype field relabelled ``bfloat16`` (same bits, same size), which ``mx.array`` imports as is;
* ``float64``, which ``mx.array`` narrows to ``float32`` from numpy: built as ``uint64`` and
  viewed, which costs an evaluation (rare in checkpoints).

Example:
    >>> import mlx.core as mx
    >>> array_from_bytes(bytearray(b"\\x80\\x3f\\x00\\x40"), mx.bfloat16, (2,)).tolist()
    [1.0, 2.0]
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from mlxload.dtypes import host_stream

__all__ = ["array_from_bytes", "arrays_from_buffers", "needs_evaluation"]

Buffer = Any  # bytes, bytearray, memoryview, or a C-contiguous uint8 numpy array

# numpy dtypes that mx.array keeps as they are (it narrows float64 to float32).
_KEPT = {
    mx.bool_: np.bool_, mx.uint8: np.uint8, mx.int8: np.int8, mx.uint16: np.uint16,
    mx.int16: np.int16, mx.uint32: np.uint32, mx.int32: np.int32, mx.uint64: np.uint64,
    mx.int64: np.int64, mx.float16: np.float16, mx.float32: np.float32,
    mx.complex64: np.complex64,
}  # fmt: skip
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}

# DLPack's ABI: struct DLTensor { void *data; DLDevice device (two int32); int32 ndim;
# DLDataType dtype (uint8 code, uint8 bits, uint16 lanes); ... } on a 64-bit little-endian
# machine, the only kind MLX runs on.
_DTYPE_OFFSET = 20
_UINT16 = (1, 16, 1, 0)  # kDLUInt, 16 bits, 1 lane
_DL_BFLOAT = 4


@functools.cache
def _capsule_pointer() -> Callable[[object, bytes], int]:
    """``PyCapsule_GetPointer`` with its own prototype (``ctypes.pythonapi``'s shared function
    object is left as other code may have set it)."""
    prototype = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)
    return prototype(("PyCapsule_GetPointer", ctypes.pythonapi))


def array_from_bytes(data: Buffer, dtype: mx.Dtype, shape: tuple[int, ...]) -> mx.array:
    """``data`` as an evaluated MLX array of ``dtype`` and ``shape``, copied once.

    Args:
        data: The tensor's bytes, C order (its length must match ``dtype`` and ``shape``).
            ``bfloat16`` needs no evaluation only from a writable buffer (numpy exports no
            read-only array over DLPack): ``bytes`` work, through an evaluated view.
        dtype: The MLX dtype to read them as.
        shape: The array's shape (at most 32 dimensions: numpy's limit).

    Returns:
        An array owning its memory, evaluated (safe to use from any thread).
    """
    return arrays_from_buffers([(data, dtype, shape)])[0]


def needs_evaluation(dtype: mx.Dtype) -> bool:
    """Whether an array of ``dtype`` made here costs an MLX evaluation (float64 does)."""
    return dtype not in _KEPT and dtype != mx.bfloat16


def arrays_from_buffers(
    parts: Sequence[tuple[Buffer, mx.Dtype, tuple[int, ...]]],
) -> list[mx.array]:
    """:func:`array_from_bytes` of each ``(data, dtype, shape)``, with one evaluation for all
    those that need one (float64; bfloat16 from a read-only buffer).

    Returns:
        The arrays, in order, evaluated.
    """
    out: list[mx.array] = []
    views: list[mx.array] = []
    for data, dtype, shape in parts:
        kept = _KEPT.get(dtype)
        if kept is not None:
            out.append(mx.array(np.frombuffer(data, kept).reshape(shape)))
            continue
        carrier = np.frombuffer(data, _UNSIGNED[dtype.size]).reshape(shape)
        relabelled = _import_as_bfloat16(carrier) if dtype == mx.bfloat16 else None
        if relabelled is None:
            relabelled = mx.view(mx.array(carrier), dtype, stream=host_stream(dtype))
            views.append(relabelled)
        out.append(relabelled)
    if views:
        # MLX streams belong to a thread: a lazy view made here couldn't be evaluated elsewhere.
        mx.eval(views)
    return out


class _Bfloat16Export:
    """Exports a ``uint16`` numpy array over DLPack, labelled ``bfloat16``."""

    __slots__ = ("_array",)

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()

    def __dlpack__(self, *args: object, **kwargs: object) -> object:
        capsule = self._array.__dlpack__()  # the unversioned capsule: a DLManagedTensor
        fields = (ctypes.c_uint8 * 4).from_address(
            _capsule_pointer()(capsule, b"dltensor") + _DTYPE_OFFSET
        )
        if tuple(fields) != _UINT16:
            raise ValueError(f"unexpected DLPack dtype {tuple(fields)} from numpy")
        fields[0] = _DL_BFLOAT
        return capsule


def _import_as_bfloat16(carrier: np.ndarray) -> mx.array | None:
    """The ``uint16`` array imported as ``bfloat16``, or None if this numpy or MLX won't."""
    try:
        out = mx.array(_Bfloat16Export(carrier))
    except Exception:  # an unusual numpy/MLX build: the caller's view still works
        return None
    if out.dtype != mx.bfloat16 or out.shape != carrier.shape:
        return None
    return out
