"""``get_slice(name)[index]`` equals indexing the whole tensor for any basic or integer-array
index, and any index it can't take is an ``IndexError`` naming the tensor (never MLX's error,
and never a read outside the tensor: MLX doesn't bounds-check index arrays)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import mlxload

SHAPE = (7, 3, 4)
ARRAY = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)

_bound = st.one_of(st.none(), st.integers(-9, 9))
_step = st.one_of(st.none(), st.integers(-3, 3).filter(lambda s: s != 0))
_basic = st.one_of(
    st.integers(-7, 6),
    st.builds(slice, _bound, _bound, _step),
    st.just(None),
    st.just(Ellipsis),
)
_array = st.lists(st.integers(-3, 2), min_size=1, max_size=3).map(np.array)


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    path = tmp_path_factory.mktemp("slice") / "t.safetensors"
    save_file({"t": ARRAY}, str(path))
    with mlxload.safe_open(path) as f:
        yield f.get_slice("t")


def _as_mlx(index: tuple) -> tuple:
    return tuple(mx.array(i) if isinstance(i, np.ndarray) else i for i in index)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.one_of(_basic, _array), max_size=4))
def test_any_index_reads_what_mlx_indexing_the_whole_tensor_gives(sliced, items):
    """The oracle is the whole tensor as an mx.array, indexed by MLX: that is the promise
    (numpy differs on one quirk: a zero-length ``...`` between index arrays). numpy decides
    what is out of bounds, which MLX doesn't check at all."""
    index = tuple(items)
    try:
        ARRAY[index]
        expected = np.array(mx.array(ARRAY)[_as_mlx(index)])
    except (IndexError, ValueError):  # out of bounds, too many indices, no broadcast...
        with pytest.raises(IndexError, match=r"t\.safetensors: tensor 't' of shape \[7, 3, 4\]: "):
            sliced[index]
        return
    np.testing.assert_array_equal(np.array(sliced[index]), expected, err_msg=repr(index))


@pytest.mark.parametrize(
    "index",
    [
        slice(None, None, 2**31),
        slice(None, None, -(2**31)),
        slice(None, None, 2**40),
        (slice(None), slice(None, None, -(2**31))),  # MLX alone gives 0 columns, not 1
        (slice(None), slice(None, None, 2**31)),
        (slice(None), slice(-(2**40), 2**40)),
        (slice(None), slice(2**40, None, -1)),
        (Ellipsis, slice(1, 2**35, 2)),
        slice(-(2**63), 2**63),
    ],
    ids=repr,
)
def test_slice_bounds_and_steps_past_32_bits_select_what_numpy_does(sliced, index):
    """MLX takes only 32-bit slice bounds (a bare ValueError past them) and gets larger steps
    wrong; every slice reaches it with bounds inside its axis."""
    np.testing.assert_array_equal(np.array(sliced[index]), ARRAY[index])


def test_a_bad_index_is_mlxloads_own_index_error(sliced):
    with pytest.raises(mlxload.TensorIndexError, match="index 9 is out of bounds for axis 0") as e:
        sliced[9]
    assert isinstance(e.value, IndexError) and isinstance(e.value, mlxload.MlxloadError)
