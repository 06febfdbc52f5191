"""Tensors over 2**31 bytes: MLX dimensions are 32-bit, so the copy path describes such ranges
as ``[n, d]`` uint8 blocks and views them back (no copy)."""

from __future__ import annotations

import json
import os
import struct

import mlx.core as mx
import numpy as np
import pytest

import mlxload
from mlxload import segment_stream
from mlxload import tensor_file as _  # noqa: F401  (bound MAX_DIM before a test lowers it)
from mlxload.errors import UnsupportedShapeError


@pytest.mark.parametrize(
    ("nbytes", "shape"),
    [
        (100, [100]),
        (2**31 - 1, [2**31 - 1]),
        (2**31 + 16, [(2**31 + 16) // 16, 16]),
        (2**33, [2**13, 2**20]),
        (3 * 2**31, [3 * 2**11, 2**20]),
    ],
)
def test_u8_shape_keeps_every_dimension_within_mlx(nbytes, shape):
    assert segment_stream.u8_shape(nbytes) == shape


def test_u8_shape_uses_the_tensors_rows_when_given():
    nbytes = 3 * 178956971 * 4  # float32 (3, 178956971): not a multiple of 16
    assert segment_stream.u8_shape(nbytes, 178956971 * 4) == [3, 178956971 * 4]
    assert segment_stream.u8_shape(2**31 + 16, 2**31 + 16) == [(2**31 + 16) // 16, 16]


def test_rows_describe_a_range_no_power_of_two_fits(tmp_path, monkeypatch):
    """float32 (3, 5) is 60 bytes: with the limit at 40, only its 20-byte rows work."""
    monkeypatch.setattr(segment_stream, "MAX_DIM", 40)
    path = tmp_path / "r.safetensors"
    values = np.arange(15, dtype=np.float32).reshape(3, 5)
    mx.save_safetensors(str(path), {"a": mx.array(values)})
    assert np.array_equal(np.array(mlxload.load_file(path)["a"]), values)
    with mlxload.safe_open(path) as f:
        assert np.array_equal(np.array(f.get_slice("a")[0:3]), values)


def test_u8_shape_refuses_an_odd_size_past_the_limit():
    with pytest.raises(UnsupportedShapeError, match="2147483649 bytes"):
        segment_stream.u8_shape(2**31 + 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.uint8])
def test_two_dimensional_ranges_read_back_exactly(tmp_path, monkeypatch, dtype):
    """The [n, d] path, exercised on small tensors by lowering the limit."""
    monkeypatch.setattr(segment_stream, "MAX_DIM", 5000)
    values = (np.arange(64 * 48) % 251).astype(dtype).reshape(64, 48)
    path = tmp_path / "t.safetensors"
    # safetensors' writer puts a then a2 side by side, 16-byte aligned: one (2-D) group
    from safetensors.numpy import save_file

    save_file({"a": values, "a2": values[::-1].copy(), "b": np.ones(4, np.float32)}, str(path))
    got = mlxload.load_file(path)
    assert np.array_equal(np.array(got["a"]), values) and got["a"].dtype == mx.array(values).dtype
    assert np.array_equal(np.array(got["a2"]), values[::-1]) and got["b"].tolist() == [1] * 4
    with mlxload.safe_open(path) as f:
        assert np.array_equal(np.array(f.get_slice("a")[10:60]), values[10:60])


def test_a_tensor_over_2_gib_loads(tmp_path):
    """2 GiB + 16 bytes of float32 in a sparse file (no disk writes)."""
    n = 2**29 + 4
    header = json.dumps({"x": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}})
    body = header.encode() + b" " * (-(8 + len(header)) % 8)
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body)) + body)
        f.seek(8 + len(body) + 4 * n - 4)
        f.write(struct.pack("<f", 1.5))
    x = mlxload.load_file(path)["x"]
    assert x.shape == (n,) and x.dtype == mx.float32
    assert x[-1].item() == 1.5 and x[0].item() == 0.0
    del x


def test_reads_are_asked_for_in_pieces_no_larger_than_max_read(tmp_path, monkeypatch):
    # macOS refuses a single read past 2**31 - 1 bytes (EINVAL): one preadv never asks that.
    import os

    path = tmp_path / "t.safetensors"
    mx.save_safetensors(str(path), {"w": mx.arange(300_000, dtype=mx.float32).reshape(1000, 300)})
    asked: list[int] = []
    real = os.preadv

    def recording(fd, buffers, offset):
        asked.append(sum(len(b) for b in buffers))
        return real(fd, buffers, offset)

    monkeypatch.setattr(segment_stream, "MAX_READ", 64 * 1024)
    monkeypatch.setattr(segment_stream.os, "preadv", recording)
    got = mlxload.load_file(path, zero_copy=False)["w"]
    assert mx.array_equal(got, mx.load(str(path))["w"]).item()
    assert asked and max(asked) == 64 * 1024 and sum(asked) >= got.nbytes


@pytest.fixture
def memory_of_1_mib(monkeypatch):
    """A machine with 1 MiB of RAM, as far as mlxload can tell."""
    from mlxload import tensor_file

    monkeypatch.setattr(tensor_file, "physical_memory", lambda: 1 << 20)


def test_a_tensor_larger_than_the_machines_memory_is_refused_by_name(tmp_path, memory_of_1_mib):
    path = tmp_path / "big.safetensors"
    mx.save_safetensors(str(path), {"small": mx.ones((16,)), "big": mx.ones((1 << 19,))})  # 2 MiB
    message = r"tensor 'big' is 2\.0 MiB, more than this machine's memory \(1\.0 MiB\)"
    with pytest.raises(mlxload.MemoryLimitError, match=message) as e:
        mlxload.load_file(path)
    assert isinstance(e.value, MemoryError)
    with mlxload.safe_open(path) as f:
        assert f.get_tensor("small").sum().item() == 16
        assert f.get_slice("big")[: 1 << 17].sum().item() == 1 << 17  # 512 KiB: in parts
        with pytest.raises(mlxload.MemoryLimitError, match=r"tensor 'big' is 2\.0 MiB"):
            f.get_slice("big")[:]


def test_mlxs_memory_limit_is_a_guideline_not_a_cap(tmp_path):
    """MLX allocates past mx.get_memory_limit() (it is a guideline); so must a read."""
    path = tmp_path / "t.safetensors"
    mx.save_safetensors(str(path), {"w": mx.ones((1 << 19,))})  # 2 MiB
    before = mx.set_memory_limit(1 << 20)
    try:
        assert mlxload.load_file(path)["w"].sum().item() == 1 << 19
    finally:
        mx.set_memory_limit(before)


def test_a_read_into_memory_mlx_failed_to_allocate_is_refused_not_made(tmp_path):
    """Past its limit, MLX 0.32's CPU allocator gives the reader a NULL buffer of the size
    asked; reading into it wrote wherever the offsets landed (EFAULT at best)."""
    size = (mx.get_memory_limit() >> 20) * 2 + 1 << 20  # twice the limit, in MiB
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(size)  # a hole: nothing is written to disk
    fd = os.open(path, os.O_RDONLY)
    try:
        stream = segment_stream.SegmentStream(fd, [("a", 0, size)], row_bytes={"a": 1 << 20})
        with pytest.raises(Exception, match=r"(?i)memory") as e:
            mx.eval(list(mx.load(stream, format="safetensors").values()))
        assert "Bad address" not in str(e.value)
    finally:
        os.close(fd)
