"""The zero-copy (Metal) path.

Linux can't wrap host memory as an MLX array (``mx.from_dlpack(copy=False)`` refuses), so here
the window import is replaced by a double that copies the window: everything else — one shared
mapping, page-aligned windows, slicing/viewing/reshaping inside them, the alignment rule that
sends misaligned tensors to the copy path, and the per-tensor path record — runs for real and is
compared with ``mx.load``. The ``metal``-marked tests run the real thing on Apple silicon.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from st_bytes import entry, write_raw

import mlxload
from mlxload import tensor_file
from mlxload.tensor_file import COPY, ZERO_COPY, zero_copy_supported


@pytest.fixture
def copying_import(monkeypatch):
    windows = []

    def fake(window: np.ndarray):
        assert window.dtype == np.uint8 and window.ndim == 1
        start = window.__array_interface__["data"][0]
        windows.append((start, window.nbytes))
        return mx.array(window)

    monkeypatch.setattr(tensor_file, "_import_no_copy", fake)
    return windows


def _mixed_file(tmp_path):
    path = tmp_path / "mixed.safetensors"
    tensors = {
        "a_odd_bf16": mx.random.normal((3,)).astype(mx.bfloat16),  # 6 bytes: shifts what follows
        "b_f32": mx.random.normal((40, 33)),
        "c_u32": mx.arange(70000, dtype=mx.uint32),  # spans more than one 16 KiB page
        "d_i8": mx.arange(5, dtype=mx.int8),
        "e_f16": mx.random.normal((7, 5)).astype(mx.float16),
    }
    mx.save_safetensors(str(path), tensors)
    return path


def test_views_inside_windows_equal_mx_load(tmp_path, copying_import):
    path = _mixed_file(tmp_path)
    ref = mx.load(str(path))
    infos = mlxload.read_header(path).tensors
    with mlxload.safe_open(path, zero_copy=True) as f:
        names = f.keys()
        got = {name: f.get_tensor(name) for name in names}
        paths = f.paths
    for name, arr in ref.items():
        assert got[name].dtype == arr.dtype and mx.array_equal(got[name], arr).item(), name
        expected = ZERO_COPY if infos[name].zero_copy_ready else COPY
        assert paths[name] == expected, name
    # the misaligned ones really are there in an mx.save_safetensors file, and got copied
    assert {n for n, p in paths.items() if p == COPY} == {
        n for n, i in infos.items() if not i.zero_copy_ready
    }
    assert copying_import, "no window was imported"


def test_window_offsets_are_page_aligned(tmp_path, monkeypatch):
    import mmap

    from safetensors.numpy import save_file

    path = tmp_path / "aligned.safetensors"
    save_file({"x": np.zeros(3, np.int8), "c_u32": np.arange(70000, dtype=np.uint32)}, str(path))
    seen = []

    def fake(window: np.ndarray):
        seen.append(window.nbytes)
        return mx.array(window)

    monkeypatch.setattr(tensor_file, "_import_no_copy", fake)
    tf = tensor_file.TensorFile(path, zero_copy=True)
    info = tf.info("c_u32")
    assert info.zero_copy_ready
    out = tf.read(["c_u32"])["c_u32"]
    assert mx.array_equal(out, mx.arange(70000, dtype=mx.uint32)).item()
    end = info.offset + info.nbytes
    mapped = -(-path.stat().st_size // mmap.PAGESIZE) * mmap.PAGESIZE  # 4 KiB pages here
    assert seen == [min(-(-end // 16384) * 16384, mapped) - (info.offset - info.offset % 16384)]
    tf.close()


def test_window_at_the_end_of_the_file_is_whole_pages(tmp_path, monkeypatch):
    """Metal wraps whole pages only: the last tensor's window runs past the end of the file
    into the rest of the last mapped page, which must read as zeros, not fault."""
    import mmap

    from safetensors.numpy import save_file

    path = tmp_path / "tail.safetensors"
    values = np.arange(70001, dtype=np.uint32)  # ends mid-page
    save_file({"tail": values}, str(path))
    windows = []

    def fake(window: np.ndarray):
        windows.append(window.copy())
        return mx.array(window)

    monkeypatch.setattr(tensor_file, "_import_no_copy", fake)
    size = path.stat().st_size
    with mlxload.safe_open(path, zero_copy=True) as f:
        out = f.get_tensor("tail")
        info = f.info("tail")
    assert mx.array_equal(out, mx.array(values)).item()
    (window,) = windows
    start = info.offset - info.offset % 16384
    mapped = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
    assert start + window.nbytes == min(-(-size // 16384) * 16384, mapped) > size
    assert not window[size - start :].any()  # past the end of the file: zeros


def test_refused_import_falls_back_to_copy(tmp_path, monkeypatch):
    path = _mixed_file(tmp_path)
    monkeypatch.setattr(tensor_file, "_import_no_copy", lambda window: None)
    with mlxload.safe_open(path, zero_copy=True) as f:
        arr = f.get_tensor("c_u32")
        assert f.paths == {"c_u32": COPY}
    assert mx.array_equal(arr, mx.arange(70000, dtype=mx.uint32)).item()


def test_linux_import_really_refuses_and_auto_copies(tmp_path, monkeypatch):
    """On this backend the real import refuses; "auto" must not even try, and loads still work."""
    if zero_copy_supported():
        pytest.skip("Metal backend: zero-copy is available here")
    with pytest.raises(ValueError, match="without a copy"):
        mx.from_dlpack(np.zeros(4, np.uint8), copy=False)

    def never(window):
        pytest.fail("'auto' tried a no-copy import on a backend that can't do one")

    monkeypatch.setattr(tensor_file, "_import_no_copy", never)
    path = _mixed_file(tmp_path)
    with mlxload.safe_open(path) as f:
        f.get_tensor("b_f32")
        assert f.paths == {"b_f32": COPY}


def test_hand_built_misaligned_tensor_is_copied(tmp_path, copying_import):
    header = {"a": entry("U8", [1], 0, 1), "b": entry("F32", [2], 1, 9)}
    body = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
    body += b'"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}'
    body += b" " * (-(8 + len(body)) % 8)
    data = b"\x07" + np.array([1.5, -2.0], np.float32).tobytes()
    path = write_raw(tmp_path / "h.safetensors", body, data)
    assert set(mlxload.read_header(path).tensors) == set(header)
    with mlxload.safe_open(path, zero_copy=True) as f:
        assert f.get_tensor("b").tolist() == [1.5, -2.0]
        assert f.get_tensor("a").tolist() == [7]
        assert f.paths == {"b": COPY, "a": ZERO_COPY}


@pytest.mark.metal
@pytest.mark.skipif(not zero_copy_supported(), reason="needs Apple-silicon Metal")
def test_real_metal_zero_copy(tmp_path):  # pragma: no cover - runs on the macOS workflow
    path = tmp_path / "aligned.safetensors"
    from safetensors.numpy import save_file

    arrays = {"w": np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32)}
    save_file(arrays, str(path))  # the reference writer aligns every tensor
    with mlxload.safe_open(path) as f:
        w = f.get_tensor("w")
        assert f.paths == {"w": ZERO_COPY}
    np.testing.assert_array_equal(np.array(w), arrays["w"])
    assert mx.array_equal(w @ mx.ones((64,)), mx.array(arrays["w"]) @ mx.ones((64,))).item()
