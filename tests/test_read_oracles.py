"""Files written by other implementations read back bit-identical (oracles: safetensors, mx)."""

from __future__ import annotations

import functools
import json
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import save_file
from st_bytes import entry, write_raw

import mlxload

NUMPY_DTYPES = [
    np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64,
    np.int64, np.float16, np.float32, np.float64, np.complex64,
]  # fmt: skip


def _sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) > 0.5)
    if np.issubdtype(dtype, np.complexfloating):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return np.asarray(rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True))


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (7,), (5, 3, 2)], ids=str)
def test_safetensors_numpy_files(tmp_path, dtype, shape, copy_path):
    arr = np.asarray(_sample(dtype, shape))
    path = tmp_path / "x.safetensors"
    save_file({"t": arr, "pad": np.zeros(3, np.uint8)}, str(path), metadata={"k": "v"})
    out = mlxload.load_file(path)
    got = out["t"]
    assert got.dtype == mlxload.DTYPES[_st_name(dtype)].mlx
    assert got.shape == arr.shape
    np.testing.assert_array_equal(np.array(got), arr)
    with mlxload.safe_open(path) as f:
        assert f.metadata() == {"k": "v"}
        assert f.info("t").dtype == _st_name(dtype)


@pytest.mark.parametrize(
    "metadata", [None, "null", {}, {"format": "pt"}], ids=["absent", "null", "empty", "map"]
)
def test_metadata_is_what_safetensors_says(tmp_path, metadata):
    """``metadata()`` is None without ``__metadata__`` (or with null), as in the reference."""
    from safetensors import safe_open as reference_open

    header = {"x": entry("F32", [2], 0, 8)}
    if metadata is not None:
        header["__metadata__"] = None if metadata == "null" else metadata
    path = write_raw(tmp_path / "m.safetensors", header, bytes(8))
    with reference_open(str(path), framework="numpy") as ref:
        expected = ref.metadata()
    with mlxload.safe_open(path) as f:
        assert f.metadata() == expected
        assert (f.metadata() is None) == (expected is None)


def _st_name(dtype) -> str:
    return {
        "bool": "BOOL", "uint8": "U8", "int8": "I8", "uint16": "U16", "int16": "I16",
        "uint32": "U32", "int32": "I32", "uint64": "U64", "int64": "I64", "float16": "F16",
        "float32": "F32", "float64": "F64", "complex64": "C64",
    }[np.dtype(dtype).name]  # fmt: skip


def test_float64_is_not_widened_or_narrowed(tmp_path):
    path = tmp_path / "f64.safetensors"
    arr = np.array([1 / 3, 1e300, -0.0], dtype=np.float64)
    save_file({"x": arr}, str(path))
    got = mlxload.load_file(path)["x"]
    assert got.dtype == mx.float64
    assert np.array(got).tobytes() == arr.tobytes()


@pytest.mark.parametrize(
    "index", [(2,), (-1, 1), (slice(None, None, -2),), (slice(1, 4), 0), (np.array([3, 0]),)]
)
def test_float64_slices_are_its_bits(tmp_path, index):
    """float64 is indexed as its bits (uint64) and viewed back on the CPU stream: MLX's GPU
    streams refuse float64 arrays (seen on CUDA)."""
    path = tmp_path / "f64.safetensors"
    arr = np.array([1 / 3, 1e300, -0.0, np.nan, -5e-324, 2.0], dtype=np.float64).reshape(3, 2)
    save_file({"x": np.concatenate([arr, arr[::-1]])}, str(path))
    with mlxload.safe_open(path) as f:
        got = f.get_slice("x")[
            tuple(mx.array(i) if isinstance(i, np.ndarray) else i for i in index)
        ]
    want = np.concatenate([arr, arr[::-1]])[index]
    assert got.dtype == mx.float64 and np.array(got).tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16, mx.float32, mx.uint32])
def test_mx_save_safetensors_matches_mx_load(tmp_path, dtype, copy_path):
    path = tmp_path / "m.safetensors"
    tensors = {
        "a": (mx.random.normal((33, 17)) * 100).astype(dtype),
        "b": mx.arange(7).astype(mx.int8),
        "c": mx.random.normal((3,)).astype(mx.bfloat16),
    }
    mx.save_safetensors(str(path), tensors, metadata={"format": "mlx"})
    ref = mx.load(str(path))
    ours = mlxload.load_file(path)
    assert list(ours) == list(mlxload.read_header(path).tensors)
    for name, arr in ref.items():
        assert ours[name].dtype == arr.dtype and ours[name].shape == arr.shape
        assert mx.array_equal(ours[name], arr).item(), name


def test_sharded_checkpoint_written_by_mlx_lm(tmp_path, monkeypatch):
    """mlx-lm's save_model writes shards >= 1 GB only; force one tensor per shard."""
    import mlx.nn as nn
    import mlx_lm.utils as lm_utils

    monkeypatch.setattr(
        lm_utils, "make_shards", functools.partial(lm_utils.make_shards, max_file_size_gb=0)
    )
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    model.update(
        {"layers": [{"weight": m.weight.astype(mx.bfloat16), "bias": m.bias} for m in model.layers]}
    )
    lm_utils.save_model(tmp_path, model)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 4

    ckpt = mlxload.load(tmp_path)
    assert len(ckpt.files) == 4
    ref = {}
    for shard in sorted(tmp_path.glob("*.safetensors")):
        ref.update(mx.load(str(shard)))
    assert sorted(ckpt) == sorted(ref)
    for name in ref:
        assert mx.array_equal(ckpt[name], ref[name]).item() and ckpt[name].dtype == ref[name].dtype
    assert ckpt.index_metadata["total_size"] == sum(a.nbytes for a in ref.values())
    assert ckpt.metadata == {"format": "mlx"}
    # same checkpoint through the index file itself
    via_index = mlxload.load(tmp_path / "model.safetensors.index.json")
    assert sorted(via_index) == sorted(ref)


@pytest.mark.parametrize(
    "dtype,shape,nbytes,storage",
    [
        ("F8_E4M3", [2, 3], 6, (2, 3)),
        ("F8_E5M2", [4], 4, (4,)),
        ("F8_E8M0", [4], 4, (4,)),
        ("F8_E4M3FNUZ", [2, 2], 4, (2, 2)),
        ("F8_E5M2FNUZ", [3], 3, (3,)),
        ("F4", [2, 4], 4, (2, 2)),
        ("F6_E2M3", [4], 3, (3,)),
        ("F6_E3M2", [1, 4], 3, (1, 3)),
    ],
)
def test_dtypes_mlx_lacks_come_back_as_raw_bytes(
    tmp_path, dtype, shape, nbytes, storage, copy_path
):
    data = bytes(range(1, nbytes + 1))
    path = write_raw(tmp_path / "r.safetensors", {"x": entry(dtype, shape, 0, nbytes)}, data)
    with mlxload.safe_open(path) as f:
        got = f.get_tensor("x")
        assert f.info("x").dtype == dtype
        assert f.info("x").shape == tuple(shape)
    assert got.dtype == mx.uint8 and got.shape == storage
    assert bytes(memoryview(got)) == data


def test_sub_byte_rows_slice_by_rows_not_bytes(tmp_path):
    """F4 of shape (4, 4, 1): the last axis is half a byte, each row is 2 bytes."""
    data = bytes(range(0x10, 0x18))
    path = write_raw(tmp_path / "r.safetensors", {"x": entry("F4", [4, 4, 1], 0, 8)}, data)
    rows = [data[2 * i : 2 * i + 2] for i in range(4)]
    with mlxload.safe_open(path) as f:
        assert f.get_tensor("x").shape == (4, 2)
        x = f.get_slice("x")
        assert bytes(memoryview(x[1:3])) == rows[1] + rows[2]
        assert bytes(memoryview(x[::2])) == rows[0] + rows[2]
        assert bytes(memoryview(x[::-1])) == b"".join(reversed(rows))
        assert bytes(memoryview(x[2])) == rows[2]
        assert bytes(memoryview(x[:])) == data
        for index in [(slice(None), 1), np.array([0, 1]), (np.array([0]), slice(None))]:
            with pytest.raises(
                mlxload.UnsupportedIndexError, match="packed uint8 bytes: index only the leading"
            ):
                x[index]


@pytest.mark.parametrize("shape", [[4, 3], [2, 4, 1], [8]])
@pytest.mark.parametrize(
    "index",
    [
        (Ellipsis,),
        (slice(None),),
        (slice(0, None),),
        (slice(None), slice(None)),
        (slice(None),) * 3,
    ],
    ids=repr,
)
def test_every_spelling_of_the_whole_sub_byte_tensor_is_its_packed_bytes(tmp_path, shape, index):
    """F4 rows of 3 values are 12 bits: no row can be cut, but the whole tensor can be read."""
    if len(index) > len(shape):
        pytest.skip("more indices than dims")
    nbytes = int(np.prod(shape)) // 2
    data = bytes(range(0x20, 0x20 + nbytes))
    path = write_raw(tmp_path / "r.safetensors", {"x": entry("F4", shape, 0, nbytes)}, data)
    with mlxload.safe_open(path) as f:
        assert bytes(memoryview(f.get_slice("x")[index])) == data
        if shape == [4, 3]:
            with pytest.raises(mlxload.UnsupportedIndexError, match="rows of F4 are 12 bits"):
                f.get_slice("x")[1:]


def test_shape_mlx_cannot_hold_is_a_clear_error(tmp_path):
    path = write_raw(tmp_path / "z.safetensors", {"x": entry("F32", [2**31, 0], 0, 0)}, b"")
    with pytest.raises(
        mlxload.errors.UnsupportedShapeError, match=r"'x' has shape \(2147483648, 0\)"
    ):
        mlxload.load_file(path)
    with pytest.raises(mlxload.errors.UnsupportedShapeError, match="32-bit"):
        mlxload.load(path)["x"]
    with mlxload.safe_open(path) as f:
        assert f.get_slice("x")[0:0].shape == (0, 0)  # a block MLX can hold is fine


def test_fp8_e4m3_conversion_matches_mlx(tmp_path):
    values = mx.array([0.5, -1.25, 3.0, 448.0])
    raw = mx.to_fp8(values)
    path = write_raw(
        tmp_path / "f8.safetensors", {"x": entry("F8_E4M3", [4], 0, 4)}, bytes(memoryview(raw))
    )
    got = mlxload.load_file(path)["x"]
    decoded = mlxload.convert_raw(got, "F8_E4M3", mx.float32)
    assert mx.array_equal(decoded, mx.from_fp8(raw, dtype=mx.float32)).item()
    with pytest.raises(NotImplementedError, match="no conversion from F4"):
        mlxload.convert_raw(got, "F4")


def test_get_slice_reads_rows(tmp_path):
    arr = np.arange(10 * 3 * 2, dtype=np.float32).reshape(10, 3, 2)
    path = tmp_path / "s.safetensors"
    save_file({"x": arr}, str(path))
    with mlxload.safe_open(path) as f:
        sl = f.get_slice("x")
        assert sl.get_shape() == [10, 3, 2] and sl.get_dtype() == "F32"
        for index in [
            slice(2, 5), slice(None, 3), slice(7, None), slice(-3, None), slice(1, 9, 3),
            slice(None, None, -2), slice(5, 2), 4, -1, (slice(1, 4), 1), (2, slice(0, 2), 1),
        ]:  # fmt: skip
            np.testing.assert_array_equal(np.array(sl[index]), arr[index], err_msg=str(index))


def test_get_slice_takes_numpy_and_mlx_indices_as_numpy_does(tmp_path):
    arr = np.arange(10 * 3 * 2, dtype=np.float32).reshape(10, 3, 2)
    path = tmp_path / "s.safetensors"
    save_file({"x": arr}, str(path))
    with mlxload.safe_open(path) as f:
        sl = f.get_slice("x")
        for index in [
            np.int64(4), (np.int32(-1), 2), np.array([0, 7]), (slice(None), [2, 0]), np.array(3),
            slice(np.int64(2), np.int32(5)), [[0, 1], [2, 0]],
            (None, 3), (Ellipsis, 1), (1, Ellipsis), (2, None, slice(1, 3)),
        ]:  # fmt: skip
            np.testing.assert_array_equal(np.array(sl[index]), arr[index], err_msg=str(index))
        np.testing.assert_array_equal(np.array(sl[mx.array([9, 1])]), arr[[9, 1]])


@pytest.mark.parametrize(
    ("index", "words"),
    [
        ((0, 1, 2, 0), "4 indices for 3 dims"),
        ((Ellipsis, 0, Ellipsis), "an index can have only one ellipsis"),
        (0.5, "can't index with float 0.5"),
        ("a", "can't index with str 'a'"),
        (True, "can't index with bool True"),
        (10, "index 10 is out of bounds for axis 0 with size 10"),
        ((0, -4), "index -4 is out of bounds for axis 1 with size 3"),
        # MLX doesn't bounds-check index arrays: it read memory outside the tensor
        ((slice(None), [0, 3]), "index 3 is out of bounds for axis 1 with size 3"),
        ((Ellipsis, np.array([2, -3])), "index -3 is out of bounds for axis 2 with size 2"),
        (np.array([True, False]), "can't index with an array of bool"),
        (([0, 1], [0, 1, 2]), ""),  # MLX's words (which may change) follow our prefix
        (slice(0.5, 2), "slice(0.5, 2, None) has a bound that is not an integer"),
        ((0, slice(None, None, 0)), "slice(None, None, 0) has step 0"),
        (np.array(12), "index 12 is out of bounds for axis 0 with size 10"),
    ],
)
def test_get_slice_index_errors_name_the_tensor_and_its_shape(tmp_path, index, words):
    """MLX's own message said "array with 1 dimensions" for a 3-dim tensor (it saw one row)."""
    path = tmp_path / "s.safetensors"
    save_file({"x": np.zeros((10, 3, 2), np.float32)}, str(path))
    with mlxload.safe_open(path) as f, pytest.raises(IndexError) as e:
        f.get_slice("x")[index]
    assert f"{path}: tensor 'x' of shape [10, 3, 2]: {words}" in str(e.value)


def test_get_slice_touches_only_requested_bytes(tmp_path, monkeypatch):
    arr = np.arange(1000 * 16, dtype=np.float16).reshape(1000, 16)
    path = tmp_path / "s.safetensors"
    save_file({"x": arr}, str(path))
    from mlxload import segment_stream

    asked = []
    real = segment_stream._pread_exact
    monkeypatch.setattr(
        segment_stream,
        "_pread_exact",
        lambda fd, view, off: asked.append((off, len(view))) or real(fd, view, off),
    )
    with mlxload.safe_open(path) as f:
        out = f.get_slice("x")[100:110]
        start = f.info("x").offset
    np.testing.assert_array_equal(np.array(out), arr[100:110])
    assert asked == [(start + 100 * 32, 10 * 32)]


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16, mx.float16], ids=str)
def test_concurrent_get_tensor_from_threads(tmp_path, dtype, copy_path):
    """Arrays read in worker threads are used in this one: MLX streams belong to a thread, so
    an array left unevaluated by a worker couldn't be evaluated here."""
    tensors = {f"t{i}": (mx.full((64, 33), i) + mx.arange(33)).astype(dtype) for i in range(40)}
    path = tmp_path / "c.safetensors"
    mx.save_safetensors(str(path), tensors)
    with mlxload.safe_open(path) as f, ThreadPoolExecutor(8) as pool:
        names = list(tensors) * 5
        results = list(pool.map(f.get_tensor, names))
    for name, got in zip(names, results, strict=True):
        assert got.dtype == dtype
        assert mx.array_equal(got, tensors[name]).item(), name


def test_checkpoint_caches_and_releases(tmp_path):
    path = tmp_path / "model.safetensors"
    mx.save_safetensors(str(path), {"a": mx.ones((4,)), "b": mx.zeros((2,))})
    ckpt = mlxload.load(tmp_path, zero_copy=False)  # the same path on every backend
    first = ckpt["a"]
    assert ckpt["a"] is first
    assert ckpt.paths == {"a": "copy"}
    ckpt.release()
    assert ckpt["a"] is not first and mx.array_equal(ckpt["a"], first).item()
    no_cache = mlxload.load(path, cache=False)
    assert no_cache["b"] is not no_cache["b"]
    assert dict(no_cache.materialize()).keys() == {"a", "b"}


def test_evict_page_cache_advises_exactly_the_copied_ranges(tmp_path, monkeypatch):
    import os

    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise here (macOS): evict_page_cache does nothing")
    arrays = {"a": np.arange(5000, dtype=np.float32), "b": np.ones((7, 3), np.float16)}
    path = tmp_path / "e.safetensors"
    save_file(arrays, str(path))
    advised = []
    real = os.posix_fadvise
    monkeypatch.setattr(
        os,
        "posix_fadvise",
        lambda fd, off, n, advice: advised.append((off, n, advice)) or real(fd, off, n, advice),
    )
    out = mlxload.load_file(path, evict_page_cache=True)
    infos = mlxload.read_header(path).tensors
    assert {advice for _, _, advice in advised} == {os.POSIX_FADV_DONTNEED}
    covered = sorted((off, off + n) for off, n, _ in advised)
    wanted = sorted((i.offset, i.offset + i.nbytes) for i in infos.values())
    assert _merge(covered) == _merge(wanted)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(np.array(out[name]), arr)
    advised.clear()
    mlxload.load_file(path)
    assert advised == []


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint32, np.int8])
def test_read_block_rows_and_columns(tmp_path, dtype, monkeypatch):
    arr = np.asarray(_sample(dtype, (6, 3, 10), seed=3))
    path = tmp_path / "b.safetensors"
    save_file({"pad": np.zeros(5, np.uint8), "x": arr}, str(path))
    from mlxload import segment_stream
    from mlxload.tensor_file import TensorFile

    asked = []
    real = segment_stream._pread_exact
    monkeypatch.setattr(
        segment_stream,
        "_pread_exact",
        lambda fd, view, off: asked.append(len(view)) or real(fd, view, off),
    )
    tf = TensorFile(path)
    for rows, cols in [((1, 4), (2, 7)), ((0, 6), (0, 10)), ((5, 6), (9, 10)), (None, (3, 5))]:
        asked.clear()
        got = np.array(tf.read_block("x", rows, cols))
        r = slice(*rows) if rows else slice(None)
        np.testing.assert_array_equal(got, arr[r, :, slice(*cols)])
        assert sum(asked) == got.nbytes  # only the block's bytes were read
    np.testing.assert_array_equal(np.array(tf.read_block("x", (2, 3))), arr[2:3])
    with pytest.raises(ValueError, match="out of range"):
        tf.read_block("x", (0, 7), (0, 1))
    tf.close()


def _merge(ranges):
    merged = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def test_adjacent_tensors_share_one_read_but_not_values(tmp_path):
    tensors = {f"t{i:02d}": np.full((16, 4), i, dtype=np.float32) for i in range(20)}
    path = tmp_path / "g.safetensors"
    save_file(tensors, str(path))
    out = mlxload.load_file(path)
    for name, arr in tensors.items():
        np.testing.assert_array_equal(np.array(out[name]), arr)
    out["t03"] = out["t03"] + 1  # rebinding one never changes its neighbours
    np.testing.assert_array_equal(np.array(out["t04"]), tensors["t04"])


def _log_preads(monkeypatch) -> list[tuple[int, int]]:
    """``(offset, nbytes)`` of every read the stream path makes, from now on."""
    from mlxload import segment_stream

    reads = []
    real = segment_stream._pread_exact

    def counting(fd, view, offset):
        reads.append((offset, len(view)))
        return real(fd, view, offset)

    monkeypatch.setattr(segment_stream, "_pread_exact", counting)
    return reads


def test_many_byte_tensors_at_odd_offsets_are_read_as_one_range(tmp_path, monkeypatch, copy_path):
    """Grouping needs only element alignment: 1,000 one-byte tensors are one read (not
    1,000, which made MLX's stream loading quadratic: 200k tensors took 22 s)."""
    from mlxload import tensor_file

    monkeypatch.setattr(tensor_file, "backend", lambda: "cpu")  # (a GPU wants 16-byte views)
    header = {f"t{i}": entry("U8", [1], i, i + 1) for i in range(1000)}
    header["h"] = entry("F16", [3], 1000, 1006)  # 2-byte elements at an even offset: joins too
    data = bytes(i % 256 for i in range(1000)) + np.array([1, 2, 3], np.float16).tobytes()
    path = write_raw(tmp_path / "many.safetensors", header, data)
    reads = _log_preads(monkeypatch)
    got = mlxload.load_file(path)
    assert reads == [(mlxload.read_header(path).data_start, 1006)]
    assert [got[f"t{i}"].item() for i in range(1000)] == [i % 256 for i in range(1000)]
    assert got["h"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("backend", ["cuda", "metal"])
def test_on_a_gpu_tensors_share_a_read_buffer_only_at_16_byte_multiples(
    tmp_path, monkeypatch, backend
):
    """MLX's CUDA matmul (cuBLASLt) refused a float16 view 2 bytes into a buffer."""
    from mlxload import tensor_file

    monkeypatch.setattr(tensor_file, "backend", lambda: backend)
    monkeypatch.setattr(tensor_file, "_SMALL_READ_BYTES", -1)
    monkeypatch.setattr(tensor_file, "_SMALL_TENSOR_BYTES", -1)
    header = {"a": entry("F16", [1], 0, 2), "b": entry("F16", [8], 2, 18)}
    header["c"] = entry("F16", [2, 4], 18, 34)  # 16 bytes after b: shares b's buffer
    values = np.arange(17, dtype=np.float16)
    path = write_raw(tmp_path / "odd.safetensors", header, values.tobytes())
    reads = _log_preads(monkeypatch)
    got = mlxload.load_file(path)
    start = mlxload.read_header(path).data_start
    assert sorted(reads) == [(start, 2), (start + 2, 32)]
    assert got["a"].tolist() == [0] and got["b"].tolist() == list(range(1, 9))
    assert got["c"].tolist() == [[9, 10, 11, 12], [13, 14, 15, 16]]


def _cached_bytes(path) -> int:
    """Bytes of ``path`` in the page cache (mincore over a private mapping)."""
    import ctypes
    import mmap
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    pages = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
    anchor = ctypes.c_char.from_buffer(mapping)
    try:
        assert libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), size, pages) == 0
    finally:
        del anchor
        mapping.close()
    return sum(p & 1 for p in bytes(pages)) * mmap.PAGESIZE


def test_evict_page_cache_leaves_nothing_cached_when_tensors_are_read_one_by_one(tmp_path):
    """Each read advised only its own bytes, and the kernel keeps a cached folio that
    straddles two tensors: reading 64 KiB tensors one at a time left 96% of the file cached."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("page-cache residency is checked with Linux's mincore")
    path = tmp_path / "many.safetensors"
    mx.save_safetensors(str(path), {f"t{i:04d}": mx.ones((16383,)) for i in range(256)})
    with open(path, "rb+") as f:
        os.fsync(f.fileno())  # dirty pages can't be dropped until written back
    size = os.path.getsize(path)

    def warm():
        path.read_bytes()
        return _cached_bytes(path)

    if warm() < size * 0.9:
        pytest.skip("this file system doesn't keep the file in the page cache")
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the whole file
    os.close(fd)
    if _cached_bytes(path) > size * 0.05:
        pytest.skip("this file system ignores POSIX_FADV_DONTNEED (tmpfs?)")
    warm()
    mlxload.load_file(path, evict_page_cache=True)
    assert _cached_bytes(path) <= size * 0.05
    warm()
    ckpt = mlxload.load(path, evict_page_cache=True)
    weights = dict(ckpt.items())  # one read per tensor, as model.load_weights(ckpt.items())
    assert len(weights) == 256
    assert _cached_bytes(path) <= size * 0.05


@pytest.mark.parametrize(
    ("shape", "index"),
    [([4, 1], (slice(None), slice(None, None, -1))), ([4, 1], (slice(None), slice(None, None, 2))),
     ([0, 3], (slice(None, None, -1),))],
    ids=repr,
)  # fmt: skip
def test_a_step_over_an_axis_of_one_element_or_none_still_reads_the_whole_tensor(
    tmp_path, shape, index
):
    nbytes = int(np.prod(shape)) // 2
    data = bytes(range(0x20, 0x20 + nbytes))
    path = write_raw(tmp_path / "r.safetensors", {"x": entry("F4", shape, 0, nbytes)}, data)
    with mlxload.safe_open(path) as f:
        assert bytes(memoryview(f.get_slice("x")[index])) == data
