"""Checkpoint memory: one read per tensor however many threads ask, and release() frees."""

from __future__ import annotations

import gc
import threading

import mlx.core as mx

import mlxload
from mlxload import tensor_file

MIB = 1 << 20


def _eight_16mib_tensors(tmp_path):
    tensors = {f"t{i}": mx.full((4096, 1024), float(i)) for i in range(8)}
    mx.save_safetensors(str(tmp_path / "model.safetensors"), tensors)
    return tmp_path


def test_threads_asking_for_one_tensor_at_once_share_one_read(tmp_path, monkeypatch):
    ckpt = mlxload.load(_eight_16mib_tensors(tmp_path))
    reads: list[list[str]] = []
    real_read = tensor_file.TensorFile.read
    start = threading.Barrier(4)

    def counted_read(self, names):
        reads.append(list(names))
        return real_read(self, names)

    monkeypatch.setattr(tensor_file.TensorFile, "read", counted_read)
    got: list[mx.array] = []

    def reader():
        start.wait()
        got.append(ckpt["t3"])

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reads == [["t3"]]
    assert all(a is got[0] for a in got)
    assert mx.array_equal(got[0], mx.full((4096, 1024), 3.0)).item()


def test_a_failed_read_is_retried_by_the_waiting_thread(tmp_path, monkeypatch):
    ckpt = mlxload.load(_eight_16mib_tensors(tmp_path))
    real_read = tensor_file.TensorFile.read
    first = threading.Event()
    proceed = threading.Event()
    calls = []

    def flaky_read(self, names):
        calls.append(list(names))
        if len(calls) == 1:
            first.set()
            proceed.wait(5)
            raise OSError("transient")
        return real_read(self, names)

    monkeypatch.setattr(tensor_file.TensorFile, "read", flaky_read)
    errors, results = [], []

    def failing():
        try:
            ckpt["t1"]
        except OSError as e:
            errors.append(e)

    a = threading.Thread(target=failing)
    a.start()
    first.wait(5)
    b = threading.Thread(target=lambda: results.append(ckpt["t1"]))
    b.start()
    proceed.set()
    a.join()
    b.join()
    assert len(errors) == 1 and len(results) == 1
    assert mx.array_equal(results[0], mx.full((4096, 1024), 1.0)).item()


# The release tests count MLX memory, so they use the copy path even on Metal (where the
# default maps the file and a mapped tensor holds no MLX memory of its own).


def test_release_frees_what_it_releases(tmp_path):
    gc.collect()
    base = mx.get_active_memory()
    ckpt = mlxload.load(_eight_16mib_tensors(tmp_path), zero_copy=False)
    for i in range(8):
        ckpt[f"t{i}"]  # read one by one: a buffer each
    assert mx.get_active_memory() - base == 128 * MIB
    ckpt.release([f"t{i}" for i in range(1, 8)])
    gc.collect()
    assert mx.get_active_memory() - base == 16 * MIB
    ckpt.release()
    gc.collect()
    assert mx.get_active_memory() == base


def test_neighbours_read_together_share_a_buffer_until_all_are_released(tmp_path):
    gc.collect()
    base = mx.get_active_memory()
    ckpt = mlxload.load(_eight_16mib_tensors(tmp_path), zero_copy=False)
    ckpt.materialize()
    assert mx.get_active_memory() - base == 128 * MIB
    ckpt.release([f"t{i}" for i in range(1, 8)])
    gc.collect()
    assert mx.get_active_memory() - base == 128 * MIB  # t0 keeps the shared buffer (documented)
    ckpt.release()
    gc.collect()
    assert mx.get_active_memory() == base


def test_uncached_checkpoint_keeps_nothing_but_what_the_caller_keeps(tmp_path):
    gc.collect()
    base = mx.get_active_memory()
    ckpt = mlxload.load(_eight_16mib_tensors(tmp_path), cache=False, zero_copy=False)
    keep = ckpt["t0"]
    ckpt.materialize()
    gc.collect()
    assert mx.get_active_memory() - base == 16 * MIB
    del keep
    gc.collect()
    assert mx.get_active_memory() == base
