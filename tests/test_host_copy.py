"""array_from_bytes: bit-identical to MLX's own view of the bytes, evaluated, any thread."""

from __future__ import annotations

import threading

import mlx.core as mx
import numpy as np
import pytest
from st_bytes import entry, write_raw

import mlxload
from mlxload import host_copy, tensor_file
from mlxload.dtypes import DTYPES
from mlxload.host_copy import array_from_bytes

MLX_DTYPES = sorted({d.mlx for d in DTYPES.values() if d.mlx is not None}, key=str)
SHAPES = [(), (0,), (3, 0, 2), (7,), (5, 3, 2)]
# bfloat16 NaNs with payloads and both signs, infinities, -0: kept bit for bit
BF16_SPECIALS = bytes.fromhex("c17f ffff 807f 80ff 0080 817f 01ff".replace(" ", ""))


def _bits(a: mx.array) -> np.ndarray:
    """The array's raw bytes (comparing bits: NaN payloads and -0 included)."""
    if not a.size:
        return np.zeros(0, np.uint8)
    # (on the CPU stream: a GPU stream refuses float64 arrays)
    return np.array(mx.view(mx.reshape(a, (-1,), stream=mx.cpu), mx.uint8, stream=mx.cpu))


def _reference(data: bytes, dtype: mx.Dtype, shape: tuple[int, ...]) -> mx.array:
    raw = mx.array(np.frombuffer(data, np.uint8))
    return mx.reshape(mx.view(raw, dtype, stream=mx.cpu), shape, stream=mx.cpu)


@pytest.mark.parametrize("dtype", MLX_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bytes_come_back_bit_identical(dtype, shape):
    n = int(np.prod(shape)) * dtype.size
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    got = array_from_bytes(bytearray(data), dtype, shape)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(_bits(got), _bits(_reference(data, dtype, shape)))


@pytest.mark.parametrize("buffer", [bytearray, bytes], ids=["writable", "read-only"])
def test_bfloat16_special_values_keep_their_bits(buffer):
    """(numpy exports no read-only array over DLPack: bytes take the evaluated view.)"""
    got = array_from_bytes(buffer(BF16_SPECIALS), mx.bfloat16, (7,))
    assert bytes(_bits(got)) == BF16_SPECIALS


def test_float64_is_not_narrowed():
    data = np.array([1 / 3, -2.5e300, np.pi], np.float64).tobytes()
    got = array_from_bytes(data, mx.float64, (3,))
    assert got.dtype == mx.float64 and bytes(_bits(got)) == data


@pytest.mark.parametrize("dtype", [d for d in MLX_DTYPES if d != mx.float64], ids=str)
def test_no_evaluation_is_needed(dtype, monkeypatch):
    """What makes small reads fast: mx.array copies at once, with no round trip to MLX's
    stream thread (float64 alone needs one: mx.array narrows it)."""
    evaluations = []
    monkeypatch.setattr(mx, "eval", lambda *a: evaluations.append(a))
    array_from_bytes(bytearray(6 * dtype.size), dtype, (2, 3))
    assert evaluations == []


def test_views_are_evaluated_together(monkeypatch):
    """A batch of float64 tensors costs one evaluation, not one each (2x slower for 5,000)."""
    evaluations = []
    real = mx.eval
    monkeypatch.setattr(mx, "eval", lambda *a: evaluations.append(len(a[0])) or real(*a))
    data = [np.full(3, i, np.float64).tobytes() for i in range(5)]
    got = host_copy.arrays_from_buffers([(d, mx.float64, (3,)) for d in data])
    assert evaluations == [5]
    assert [a.tolist() for a in got] == [[float(i)] * 3 for i in range(5)]


@pytest.mark.parametrize("relabel", ["works", "refused"])
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float64, mx.float16], ids=str)
def test_arrays_made_in_a_thread_are_usable_in_another(dtype, relabel, monkeypatch):
    """MLX streams belong to a thread: an array left lazy in a worker can't be evaluated in
    the caller. With the bfloat16 relabelling refused (an unusual numpy), the fallback still
    hands back an evaluated array."""
    if relabel == "refused":
        monkeypatch.setattr(host_copy, "_UINT16", (0, 0, 0, 0))
    data = bytearray(BF16_SPECIALS[:12] if dtype.size == 2 else range(1, 12 * dtype.size + 1))
    shape = (len(data) // dtype.size,)
    made = []
    worker = threading.Thread(target=lambda: made.append(array_from_bytes(data, dtype, shape)))
    worker.start()
    worker.join()
    assert len(made) == 1 and made[0].dtype == dtype
    assert bytes(_bits(made[0])) == data


def test_which_tensors_take_the_small_path(tmp_path, monkeypatch):
    """A read of at most 16 tensors and 1 MiB is copied whole. A larger read copies the runs
    of adjacent tensors that average at most 16 KiB and streams the others whole, biases
    between weights included (taken out, they left each weight a read of its own)."""
    rng = np.random.default_rng(0)
    layout = [(f"w{i // 2}" if i % 2 == 0 else f"b{i // 2}", 25600 if i % 2 == 0 else 256)
              for i in range(20)]  # fmt: skip
    layout += [(f"s{i}", 4) for i in range(17)] + [(f"m{i}", 20480) for i in range(17)]
    layout += [("big", (1 << 18) + 1), ("deep", 1)]
    header, values, offset = {}, {}, 0
    for name, count in layout:
        values[name] = rng.standard_normal(count).astype(np.float32)
        shape = [1] * 33 if name == "deep" else [count]
        header[name] = entry("F32", shape, offset, offset + 4 * count)
        offset += 4 * count
    path = write_raw(
        tmp_path / "m.safetensors", header, b"".join(v.tobytes() for v in values.values())
    )
    streamed: list[list[str]] = []
    real = tensor_file.TensorFile._copy_tensors

    def spy(self, infos):
        streamed.append(sorted(i.name for i in infos))
        return real(self, infos)

    monkeypatch.setattr(tensor_file.TensorFile, "_copy_tensors", spy)
    small, medium = [f"s{i}" for i in range(17)], [f"m{i}" for i in range(17)]
    pairs = [name for name, _ in layout[:20]]
    with mlxload.safe_open(path) as f:
        got = f._file.read(["s0", "m0"])
        got |= f._file.read(small)
        assert streamed == []
        got |= f._file.read(medium[:13])  # 1,040 KiB of 80 KiB tensors
        got |= f._file.read(pairs)  # 100 KiB weights with 1 KiB biases between them
        got |= f._file.read(["big"])
        got |= f._file.read(["deep"])  # 33 dimensions: more than numpy 1.x holds
        assert streamed == [sorted(medium[:13]), sorted(pairs), ["big"], ["deep"]]
    assert got["deep"].shape == (1,) * 33
    for name, arr in got.items():
        np.testing.assert_array_equal(np.array(arr).reshape(-1), values[name], err_msg=name)
