"""Checkpoint memory: one read per tensor however many threads ask, and release() frees."""

from __future__ import annotations

import gc
import threading

import mlx.core as mx
import pytest

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


def test_a_read_whose_shard_another_thread_closed_opens_it_again(tmp_path, monkeypatch):
    """close() from another thread between taking a shard and reading it: the read failed
    with 'file is closed', though close() doesn't end the checkpoint."""
    from mlxload.tensor_file import TensorFile

    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"a": mx.ones((4,)), "b": mx.full((4,), 2.0)})
    ckpt = mlxload.load(path, cache=False)
    assert ckpt["a"].sum().item() == 4
    real_read = TensorFile.read
    closes = []

    def closed_first(self, names):
        if not closes:
            closes.append(1)
            ckpt.close()  # what the other thread does, just then
        return real_read(self, names)

    monkeypatch.setattr(TensorFile, "read", closed_first)
    assert ckpt["b"].sum().item() == 8 and closes == [1]
    with mlxload.safe_open(path) as f:
        pass
    with pytest.raises(mlxload.FileClosedError, match="file is closed"):
        f.get_tensor("a")  # a closed safe_open stays closed


def test_paths_can_be_read_while_another_thread_opens_shards(tmp_path):
    import json
    import sys
    import threading

    weight_map = {}
    for s in range(100):
        mx.save_safetensors(str(tmp_path / f"m{s:03d}.safetensors"), {f"s{s}": mx.ones((4,))})
        weight_map[f"s{s}"] = f"m{s:03d}.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    errors_seen = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(5):
            ckpt = mlxload.load(tmp_path)
            done = threading.Event()

            def reader(ckpt=ckpt, done=done):
                for s in range(100):
                    ckpt[f"s{s}"]
                done.set()

            def watcher(ckpt=ckpt, done=done):
                while not done.is_set():
                    try:
                        assert isinstance(ckpt.paths, dict)
                    except Exception as e:  # any error is the failure
                        errors_seen.append(e)

            threads = [threading.Thread(target=reader), threading.Thread(target=watcher)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ckpt.close()
    finally:
        sys.setswitchinterval(interval)
    assert errors_seen == []


def test_a_read_of_many_tensors_claims_them_with_one_event(tmp_path, monkeypatch):
    """An Event per name (about 1.2 KiB each) took materialize() of 65,536 small tensors from
    1.34x to 1.64x the file's size at peak."""
    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {f"t{i}": mx.ones((2,)) for i in range(500)})
    ckpt = mlxload.load(path)
    seen = []
    real_read = ckpt._read

    def looking(names):
        seen.append({id(event) for event in ckpt._inflight.values()})
        seen.append(len(ckpt._inflight))
        return real_read(names)

    monkeypatch.setattr(ckpt, "_read", looking)
    assert len(ckpt.materialize()) == 500
    assert seen == [seen[0], 500] and len(seen[0]) == 1
    assert ckpt._inflight == {}


def _count_reads(monkeypatch) -> list[list[str]]:
    reads: list[list[str]] = []
    real_read = tensor_file.TensorFile.read

    def counted_read(self, names):
        reads.append(list(names))
        return real_read(self, names)

    monkeypatch.setattr(tensor_file.TensorFile, "read", counted_read)
    return reads


def test_items_and_values_read_in_batches_in_key_order(tmp_path, monkeypatch):
    """``Mapping.items`` reads one tensor at a time: 7x slower for 5,000 small tensors than one
    batch, and ``model.load_weights(list(ckpt.items()))`` is how models are loaded."""
    tensors = {f"w{i:03d}": mx.full((3, 5), float(i)) for i in range(300)}
    mx.save_safetensors(str(tmp_path / "model-00001-of-00002.safetensors"),
                        dict(list(tensors.items())[:120]))  # fmt: skip
    mx.save_safetensors(str(tmp_path / "model-00002-of-00002.safetensors"),
                        dict(list(tensors.items())[120:]))  # fmt: skip
    reads = _count_reads(monkeypatch)
    ckpt = mlxload.load(tmp_path)
    first = ckpt["w005"]
    items = list(ckpt.items())
    assert [n for n, _ in items] == list(ckpt.keys())
    for name, array in items:
        assert mx.array_equal(array, tensors[name]).item(), name
    assert dict(items)["w005"] is first  # cached tensors come from the cache
    assert sorted(len(r) for r in reads) == [1, 119, 180]  # one read per shard, w005 once
    assert [a is ckpt[n] for n, a in items] == [True] * 300
    values = list(ckpt.values())
    assert all(v is a for v, (_, a) in zip(values, items, strict=True))
    assert len(reads) == 3


def test_items_stop_reading_at_the_batch_a_consumer_breaks_out_of(tmp_path, monkeypatch):
    monkeypatch.setattr("mlxload.checkpoint._ITER_BATCH_BYTES", 32 * MIB)
    reads = _count_reads(monkeypatch)
    ckpt = mlxload.load(_eight_16mib_tensors(tmp_path))
    order = list(ckpt)  # file order (mx.save_safetensors' own)
    for name, array in ckpt.items():
        assert name == order[0]
        assert mx.array_equal(array, mx.full((4096, 1024), float(name[1:]))).item()
        break
    assert reads == [order[:2]]  # 32 MiB reached after two 16 MiB tensors


def test_uncached_items_read_each_tensor_into_its_own_buffer(tmp_path):
    """Without the cache, ``items()`` serves a streaming consumer: what it drops is freed
    even when it keeps a neighbour (a batch would share one buffer among them)."""
    gc.collect()
    base = mx.get_active_memory()
    ckpt = mlxload.load(_eight_16mib_tensors(tmp_path), cache=False, zero_copy=False)
    kept = [array for name, array in ckpt.items() if name == "t3"]
    gc.collect()
    assert mx.get_active_memory() - base == 16 * MIB
    assert mx.array_equal(kept[0], mx.full((4096, 1024), 3.0)).item()


def test_items_over_a_stale_index_give_every_pair_before_the_missing_tensor(tmp_path):
    """As ``Mapping.items`` did one by one: the batch read failed before the first pair."""
    import json

    tensors = {f"w{i}": mx.full((2,), float(i)) for i in range(6)}
    mx.save_safetensors(str(tmp_path / "a.safetensors"), tensors)
    names = list(tensors)
    weight_map = dict.fromkeys([*names[:3], "gone", *names[3:]], "a.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ckpt = mlxload.load(tmp_path)
    got = []
    with pytest.raises(mlxload.TensorNotInShardError, match="'gone'"):
        for name, array in ckpt.items():
            got.append((name, array.tolist()))
    assert got == [(f"w{i}", [float(i)] * 2) for i in range(3)]
