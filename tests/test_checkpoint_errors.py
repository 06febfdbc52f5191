"""Broken sharded checkpoints and files that change under us give our own clear errors."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex

import mlx.core as mx
import pytest

import mlxload
from mlxload import errors


def _sharded(tmp_path, n_shards=2):
    weights = {f"layers.{i}.weight": mx.full((4, 4), i, dtype=mx.float16) for i in range(6)}
    names = sorted(weights)
    weight_map = {}
    for k in range(n_shards):
        fname = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
        part = names[k::n_shards]
        mx.save_safetensors(str(tmp_path / fname), {n: weights[n] for n in part})
        weight_map.update(dict.fromkeys(part, fname))
    index = {"metadata": {"total_size": sum(w.nbytes for w in weights.values())},
             "weight_map": weight_map}  # fmt: skip
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    return weights, index


def _write_index(tmp_path, index):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))


def test_index_opens_only_needed_shards(tmp_path):
    weights, index = _sharded(tmp_path)
    ckpt = mlxload.load(tmp_path)
    assert len(ckpt) == 6 and ckpt._open == {}  # keys come from the index alone
    name = "layers.0.weight"
    assert mx.array_equal(ckpt[name], weights[name]).item()
    assert [p.name for p in ckpt._open] == [index["weight_map"][name]]


def test_missing_shard(tmp_path):
    _sharded(tmp_path)
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(errors.MissingShardError, match=r"missing .*model-00002-of-00002"):
        mlxload.load(tmp_path)


def test_tensor_missing_from_its_shard(tmp_path):
    _, index = _sharded(tmp_path)
    index["weight_map"]["layers.9.weight"] = "model-00001-of-00002.safetensors"
    _write_index(tmp_path, index)
    ckpt = mlxload.load(tmp_path)
    with pytest.raises(errors.TensorNotInShardError, match=r"'layers.9.weight' is in .*00001"):
        ckpt["layers.9.weight"]


def test_tensor_in_two_shards_with_index(tmp_path):
    _sharded(tmp_path)
    stale = tmp_path / "model-00002-of-00002.safetensors"
    mx.save_safetensors(str(stale), {"layers.0.weight": mx.zeros((4, 4)), "layers.1.weight":
                                     mx.zeros((4, 4))})  # fmt: skip
    ckpt = mlxload.load(tmp_path)
    with pytest.raises(
        errors.DuplicateTensorError,
        match=r"'layers\.0\.weight' is stored in both model-00002.* and model-00001",
    ):
        ckpt["layers.1.weight"]


def test_an_index_naming_one_file_two_ways_opens_it_once(tmp_path):
    # On a case-insensitive APFS volume "Model-1.safetensors" and "model-1.safetensors" are one
    # file; a hard link is such a second name on any file system.
    mx.save_safetensors(
        str(tmp_path / "model-1.safetensors"), {"w": mx.ones((2,)), "v": mx.zeros((3,))}
    )
    os.link(tmp_path / "model-1.safetensors", tmp_path / "Model-1.safetensors")
    _write_index(tmp_path, {"weight_map": {"w": "model-1.safetensors", "v": "Model-1.safetensors"}})
    ckpt = mlxload.load(tmp_path)
    assert [p.name for p in ckpt.files] == ["model-1.safetensors"]
    assert ckpt["w"].tolist() == [1.0, 1.0] and ckpt["v"].tolist() == [0.0, 0.0, 0.0]
    assert dict(ckpt.materialize()).keys() == {"w", "v"}


def test_stale_index_entry_does_not_block_the_shards_other_tensors(tmp_path):
    """s1 holds w and v, the index places w in s2 (which lacks it): only w is an error."""
    mx.save_safetensors(str(tmp_path / "s1.safetensors"), {"w": mx.ones((2,)), "v": mx.zeros((2,))})
    mx.save_safetensors(str(tmp_path / "s2.safetensors"), {"u": mx.ones((3,))})
    weight_map = {"w": "s2.safetensors", "v": "s1.safetensors", "u": "s2.safetensors"}
    _write_index(tmp_path, {"weight_map": weight_map})
    ckpt = mlxload.load(tmp_path)
    assert ckpt["v"].tolist() == [0.0, 0.0] and ckpt["u"].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(errors.TensorNotInShardError, match=r"'w' is in s2\.safetensors"):
        ckpt["w"]


def test_tensor_in_two_shards_without_index(tmp_path):
    mx.save_safetensors(str(tmp_path / "a.safetensors"), {"w": mx.zeros((2,))})
    mx.save_safetensors(str(tmp_path / "b.safetensors"), {"w": mx.ones((2,))})
    with pytest.raises(errors.DuplicateTensorError, match=r"'w' is stored in both a.safe"):
        list(mlxload.load(tmp_path))


@pytest.mark.parametrize(
    "text,match",
    [
        ("{not json", "not valid JSON"),
        ('{"metadata": {}}', "weight_map"),
        ('{"weight_map": ["a"]}', "weight_map"),
        ('{"weight_map": {"w": "../evil.safetensors"}}', "relative file name"),
        ('{"weight_map": {"w": 3}}', "relative file name"),
    ],
)
def test_bad_index(tmp_path, text, match):
    (tmp_path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(errors.IndexFileError, match=match):
        mlxload.load(tmp_path)


def test_directory_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(errors.CheckpointError, match=r"no \*.safetensors files"):
        mlxload.load(tmp_path)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("pytorch_model.bin", "PyTorch weights: convert them to safetensors"),
        ("model-q4.gguf", "GGUF weights: mlxload reads safetensors only"),
    ],
)
def test_a_directory_of_weights_in_another_format_says_which(tmp_path, name, words):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / name).write_bytes(b"\0" * 16)
    with pytest.raises(errors.CheckpointError) as e:
        mlxload.load(tmp_path)
    assert str(e.value).endswith(f"in this directory (it holds {name}: {words})")


def test_unknown_tensor_name(tmp_path):
    _sharded(tmp_path)
    with pytest.raises(errors.TensorNotFoundError, match=r"no tensor named 'nope'$") as info:
        mlxload.load(tmp_path)["nope"]
    assert isinstance(info.value, KeyError)


def test_a_misspelt_tensor_name_gets_the_close_one_suggested(tmp_path):
    _sharded(tmp_path)
    typo = "layers.1.wieght"
    with pytest.raises(errors.TensorNotFoundError) as info:
        mlxload.load(tmp_path)[typo]
    assert str(info.value).endswith(f"no tensor named {typo!r} (did you mean 'layers.1.weight'?)")
    shard = tmp_path / "model-00001-of-00002.safetensors"
    with mlxload.safe_open(shard) as f, pytest.raises(errors.TensorNotFoundError) as info:
        f.get_tensor("layers.0.weigh")
    assert (
        str(info.value)
        == f"{shard}: no tensor named 'layers.0.weigh' (did you mean 'layers.0.weight'?)"
    )


def test_directory_without_index_takes_sorted_files(tmp_path):
    mx.save_safetensors(str(tmp_path / "b.safetensors"), {"y": mx.ones((2,))})
    mx.save_safetensors(str(tmp_path / "a.safetensors"), {"x": mx.zeros((2,))})
    ckpt = mlxload.load(tmp_path)
    assert [p.name for p in ckpt.files] == ["a.safetensors", "b.safetensors"]
    assert list(ckpt) == ["x", "y"]


def test_macos_appledouble_files_are_not_shards(tmp_path):
    # What macOS leaves beside each file it copies to an exFAT/FAT/SMB drive: a resource-fork
    # header (magic 00 05 16 07) under the same name with "._" in front.
    appledouble = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + bytes(4072)
    mx.save_safetensors(str(tmp_path / "model.safetensors"), {"x": mx.zeros((2,))})
    (tmp_path / "._model.safetensors").write_bytes(appledouble)
    ckpt = mlxload.load(tmp_path)
    assert [p.name for p in ckpt.files] == ["model.safetensors"] and list(ckpt) == ["x"]
    (tmp_path / "sharded").mkdir()
    _sharded(tmp_path / "sharded")
    index = tmp_path / "sharded" / "model.safetensors.index.json"
    index.rename(index.with_name("weights.safetensors.index.json"))
    (tmp_path / "sharded" / "._weights.safetensors.index.json").write_bytes(appledouble)
    assert len(mlxload.load(tmp_path / "sharded").files) == 2


# -- files changing after open ------------------------------------------------------------------


def _one_file(tmp_path):
    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"a": mx.arange(1000, dtype=mx.float32), "b": mx.ones((10,))})
    return path


def test_truncated_after_open(tmp_path):
    path = _one_file(tmp_path)
    with mlxload.safe_open(path) as f:
        os.truncate(path, os.path.getsize(path) - 100)
        with pytest.raises(errors.FileChangedError, match="modified"):
            f.get_tensor("a")


def test_replaced_after_open(tmp_path):
    path = _one_file(tmp_path)
    with mlxload.safe_open(path) as f:
        other = tmp_path / "other.safetensors"
        mx.save_safetensors(str(other), {"a": mx.zeros((1000,)), "b": mx.zeros((10,))})
        os.replace(other, path)
        with pytest.raises(errors.FileChangedError, match="replaced"):
            f.get_tensor("a")


def test_modified_in_place_after_open(tmp_path):
    path = _one_file(tmp_path)
    with mlxload.safe_open(path) as f:
        with open(path, "r+b") as raw:
            raw.seek(-4, os.SEEK_END)
            raw.write(b"\x00\x00\x80\x7f")
        os.utime(path, ns=(1, 1))  # make sure the mtime differs even on coarse clocks
        with pytest.raises(errors.FileChangedError, match=r"file was modified \(written again, "):
            f.get_tensor("b")


def test_rewritten_while_being_read_is_an_error_not_wrong_data(tmp_path, monkeypatch, copy_path):
    """Same size, rewritten between the check before the read and the read itself."""
    path = _one_file(tmp_path)
    from mlxload import segment_stream

    real = segment_stream._pread_exact
    size = os.path.getsize(path)

    def rewrite_then_read(fd, view, off):
        os.truncate(path, 0)
        os.truncate(path, size)  # zeros now, same size
        os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
        return real(fd, view, off)

    monkeypatch.setattr(segment_stream, "_pread_exact", rewrite_then_read)
    # (the copy path: where Metal maps the file, _pread_exact isn't used)
    reader = mlxload.safe_open(path, zero_copy=False)
    with reader as f, pytest.raises(errors.FileChangedError, match="modified"):
        f.get_tensor("a")


def test_rewritten_in_place_with_its_time_put_back_is_still_changed(tmp_path):
    """``rsync --inplace -t``, ``cp -p``: same inode, size and mtime, other bytes."""
    path = _one_file(tmp_path)
    st = path.stat()
    with mlxload.safe_open(path) as f:
        f.get_tensor("a")
        with open(path, "r+b") as raw:
            raw.seek(-4, os.SEEK_END)
            raw.write(b"\x00\x00\x80\x7f")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
        with pytest.raises(errors.FileChangedError, match=r"written again with its time put back"):
            f.get_tensor("b")


@pytest.mark.parametrize("change", ["chmod", "hard link"])
def test_a_new_mode_or_link_is_no_change_of_content(tmp_path, change):
    """Both move the status-change time, as a rewrite with its time put back does; they come
    with a new mode or link count, which such a rewrite doesn't."""
    from mlxload.writer import split

    src = _one_file(tmp_path)
    split(src, tmp_path / "out", max_shard_size="17KiB")
    ckpt = mlxload.load(tmp_path / "out")
    first, last = ckpt.files[0], ckpt.files[-1]
    with mlxload.safe_open(first) as f:
        names = f.keys()
        f.get_tensor(names[0])
        for shard in (first, last):  # one open, one not opened yet
            if change == "chmod":
                os.chmod(shard, 0o600)
            else:
                os.link(shard, shard.with_name(shard.name + ".backup"))
        assert all(f.get_tensor(n).size for n in names)
    assert sorted(ckpt.materialize()) == ["a", "b"]


@pytest.mark.parametrize("layout", ["file", "directory"])
def test_a_checkpoint_reopened_after_close_refuses_a_replaced_file(tmp_path, layout):
    """close() and read again: the tensor cached before and the one read after would come from
    two versions of the checkpoint (an index recorded the files already; these had none)."""
    path = _one_file(tmp_path)
    ckpt = mlxload.load(path if layout == "file" else tmp_path)
    assert ckpt["a"][1].item() == 1.0
    ckpt.close()
    other = tmp_path / "elsewhere" / "m.safetensors"
    other.parent.mkdir()
    mx.save_safetensors(str(other), {"a": mx.zeros((1000,)), "b": mx.zeros((10,))})
    os.replace(other, path)
    with pytest.raises(
        errors.FileChangedError, match=r"replaced since the checkpoint first read it"
    ):
        ckpt["b"]


def test_a_checkpoint_reopened_after_close_reads_the_same_file_again(tmp_path):
    path = _one_file(tmp_path)
    ckpt = mlxload.load(path, cache=False)
    assert ckpt["a"][1].item() == 1.0
    ckpt.close()
    assert ckpt["b"][0].item() == 1.0 and ckpt["a"][2].item() == 2.0


def test_a_moved_directory_with_a_file_in_its_place_is_a_change_not_an_os_error(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    path = _one_file(folder)
    with mlxload.safe_open(path) as f:
        folder.rename(tmp_path / "moved")
        folder.write_text("now a file")  # model/m.safetensors: ENOTDIR
        with pytest.raises(errors.FileChangedError, match="replaced"):
            f.get_tensor("a")


def test_relative_path_survives_a_chdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_file(tmp_path)
    name = "m.safetensors"
    with mlxload.safe_open(name) as f:
        ckpt = mlxload.load(name)
        monkeypatch.chdir(tmp_path.parent)
        assert f.get_tensor("a").shape == ckpt["a"].shape == (1000,)


def test_short_read_is_an_error_not_a_crash(tmp_path, monkeypatch, copy_path):
    """If the size check is raced, a short pread still ends in FileChangedError."""
    path = _one_file(tmp_path)
    from mlxload import segment_stream

    monkeypatch.setattr(segment_stream, "_pread_exact", lambda fd, view, off: 0)
    reader = mlxload.safe_open(path, zero_copy=False)  # the copy path reads with _pread_exact
    with reader as f, pytest.raises(errors.FileChangedError, match="truncated"):
        f.get_tensor("a")


def test_an_io_error_while_reading_is_ours_and_names_the_file(tmp_path, monkeypatch, copy_path):
    path = _one_file(tmp_path)
    from mlxload import segment_stream

    def failing(fd, view, off):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(segment_stream, "_pread_exact", failing)
    reader = mlxload.safe_open(path, zero_copy=False)
    expected = re.escape(f"{path}: reading tensor data failed")
    with reader as f, pytest.raises(errors.MlxloadError, match=expected):
        f.get_tensor("a")


def test_checkpoint_read_block_reads_from_the_right_shard(tmp_path):
    weights, _ = _sharded(tmp_path)
    ckpt = mlxload.load(tmp_path)
    block = ckpt.read_block("layers.3.weight", rows=(1, 3), cols=(2, 4))
    assert mx.array_equal(block, weights["layers.3.weight"][1:3, 2:4]).item()
    assert "layers.3.weight" not in ckpt._cache


def test_fifo_and_directory_are_clear_errors_not_hangs(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    for call in (mlxload.read_header, mlxload.load_file, mlxload.safe_open):
        with pytest.raises(errors.NotARegularFileError, match="not a regular file"):
            call(fifo)
    folder = tmp_path / "dir.safetensors"
    folder.mkdir()
    with pytest.raises(errors.NotARegularFileError, match="is a directory"):
        mlxload.read_header(folder)


def test_index_that_is_a_fifo_or_directory_is_not_read(tmp_path):
    mx.save_safetensors(str(tmp_path / "a.safetensors"), {"x": mx.ones((2,))})
    fifo = tmp_path / "model.safetensors.index.json"
    os.mkfifo(fifo)
    assert list(mlxload.load(tmp_path)) == ["x"]  # not an index: the shards are listed
    with pytest.raises(
        errors.IndexFileError, match=r"is not a regular file .*; an index must be a JSON file"
    ):
        mlxload.load(fifo)  # named directly: refused, never a blocking read
    fifo.unlink()
    (tmp_path / "other.safetensors.index.json").mkdir()
    assert list(mlxload.load(tmp_path)) == ["x"]


def test_index_naming_one_shard_two_ways_lists_it_once(tmp_path):
    mx.save_safetensors(str(tmp_path / "model.safetensors"), {"a": mx.ones(2), "b": mx.zeros(3)})
    weight_map = {"a": "model.safetensors", "b": "./model.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ckpt = mlxload.load(tmp_path)
    assert ckpt.files == [tmp_path / "model.safetensors"]
    assert sorted(ckpt) == ["a", "b"] and ckpt["b"].tolist() == [0, 0, 0]


def test_index_naming_a_shard_too_long_for_the_filesystem_says_it_is_missing(tmp_path):
    weight_map = {"w": "x" * 300 + ".safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(errors.MissingShardError, match="1 shard"):
        mlxload.load(tmp_path)


def test_huge_index_is_refused_before_reading(tmp_path, monkeypatch):
    from mlxload import shards

    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"weight_map": {}}' + " " * 100)
    monkeypatch.setattr(shards, "MAX_INDEX_SIZE", 64)
    with pytest.raises(errors.IndexFileError, match="over the 64-byte limit"):
        mlxload.load(tmp_path)


def test_path_replaced_while_opening_reads_one_consistent_file(tmp_path, monkeypatch):
    """Header and data come from the same descriptor, whatever happens to the path."""
    from mlxload import header, tensor_file

    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"a": mx.array([1.0, 2.0])})
    other = tmp_path / "other.safetensors"
    mx.save_safetensors(str(other), {"a": mx.array([7, 8], dtype=mx.int32)})
    real = header.read_header_fd

    def swap_then_read(fd, p):
        os.replace(other, path)  # same size, different bytes, lands mid-open
        return real(fd, p)

    monkeypatch.setattr(tensor_file, "read_header_fd", swap_then_read)
    tf = tensor_file.TensorFile(path)
    with pytest.raises(errors.FileChangedError, match="replaced"):
        tf.read(["a"])  # the old file's header never meets the new file's bytes
    tf.close()


def test_close_waits_for_a_read_in_another_thread(tmp_path, monkeypatch):
    import threading
    import time

    from mlxload import segment_stream
    from mlxload.tensor_file import TensorFile

    path = _one_file(tmp_path)
    tf = TensorFile(path)
    started, real = threading.Event(), segment_stream._pread_exact

    def slow(fd, view, off):
        started.set()
        time.sleep(0.3)
        return real(fd, view, off)

    monkeypatch.setattr(segment_stream, "_pread_exact", slow)
    result = {}
    reader = threading.Thread(target=lambda: result.update(tf.read(["a"])))
    reader.start()
    started.wait(5)
    tf.close()  # must not pull the descriptor out from under the read
    reader.join(5)
    assert mx.array_equal(result["a"], mx.arange(1000, dtype=mx.float32)).item()
    with pytest.raises(mlxload.MlxloadError, match="file is closed"):
        tf.read(["a"])


def test_missing_path_is_an_mlxload_error(tmp_path):
    with pytest.raises(errors.CheckpointNotFoundError, match="no such file or directory") as e:
        mlxload.load(tmp_path / "nope")
    assert isinstance(e.value, mlxload.MlxloadError) and isinstance(e.value, FileNotFoundError)


@pytest.mark.parametrize(
    ("content", "hint"),
    [
        (b'{"model_type": "llama", "hidden_size": 64}', "starts like a JSON file"),
        (b"PK\x03\x04\x14\x00\x08\x08" + bytes(40), "it is a zip archive: a PyTorch .bin/.pt"),
        (b"\x80\x02}q\x00(X\x07" + bytes(40), "it is a Python pickle"),
        (b"GGUF\x03\x00\x00\x00" + bytes(40), "it is a GGUF file"),
    ],
)
def test_a_file_that_is_not_safetensors_fails_at_load_and_says_what_it_is(tmp_path, content, hint):
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(errors.SafetensorsError, match=re.escape(hint)):
        mlxload.load(path)  # at load(), not on first use


def test_a_truncated_safetensors_file_gets_no_false_hint(tmp_path):
    for first in (b"\x80", b"{"):  # a length whose low byte looks like pickle or JSON
        path = tmp_path / "cut.safetensors"
        path.write_bytes(first + bytes(7) + b"{}")
        with pytest.raises(errors.HeaderLengthError) as e:
            mlxload.load(path)
        assert str(e.value).endswith("the file is truncated or not safetensors")


def test_load_of_one_file_does_not_hold_it_open(tmp_path):
    """load() checks the header at once but opens the file on first use, so a file replaced
    in between (e.g. by mlxload align) is read as it is then."""
    path = tmp_path / "w.safetensors"
    mx.save_safetensors(str(path), {"w": mx.ones(3)})
    ckpt = mlxload.load(path)
    mx.save_safetensors(str(tmp_path / "new.safetensors"), {"w": mx.zeros(3)})
    os.replace(tmp_path / "new.safetensors", path)
    assert ckpt["w"].tolist() == [0, 0, 0]


def test_repr_of_a_broken_checkpoint_does_not_raise(tmp_path):
    mx.save_safetensors(str(tmp_path / "a.safetensors"), {"x": mx.ones(2)})
    (tmp_path / "b.safetensors").write_bytes(b"junk")
    ckpt = mlxload.load(tmp_path)
    assert repr(ckpt).endswith("files=2, tensors=?)")


@pytest.mark.parametrize(
    "open_it",
    [
        mlxload.load_file,
        lambda p: mlxload.safe_open(p).__enter__(),
        mlxload.read_header,
        mlxload.load,
    ],
    ids=["load_file", "safe_open", "read_header", "load"],
)
def test_a_missing_file_is_our_error_and_still_a_file_not_found_error(tmp_path, open_it):
    path = tmp_path / "nonexist.safetensors"
    with pytest.raises(errors.CheckpointNotFoundError) as e:
        open_it(path)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, errors.MlxloadError)
    assert str(e.value) == f"{path}: no such file or directory"
    assert e.value.errno == errno.ENOENT and e.value.filename == str(path)


def test_a_numbered_set_without_index_must_be_whole(tmp_path):
    """model-0000i-of-0000N files without an index: a split, copy or download stopped part way
    would otherwise load as a model with tensors missing."""
    for i in (1, 2, 4):
        mx.save_safetensors(
            str(tmp_path / f"model-{i:05d}-of-00005.safetensors"), {f"t{i}": mx.ones(2)}
        )
    mx.save_safetensors(str(tmp_path / "extra.safetensors"), {"e": mx.ones(2)})
    with pytest.raises(errors.MissingShardError) as e:
        mlxload.load(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: has 3 of the 5 shards of model-*-of-00005.safetensors and no index; "
        "model-00003-of-00005.safetensors is missing (2 in all): a split, copy or download "
        "stopped part way? finish it (rerun the command), or remove the partial set"
    )
    for i in (3, 5):
        mx.save_safetensors(
            str(tmp_path / f"model-{i:05d}-of-00005.safetensors"), {f"t{i}": mx.ones(2)}
        )
    assert sorted(mlxload.load(tmp_path)) == ["e", "t1", "t2", "t3", "t4", "t5"]


def test_a_numbered_set_may_count_from_zero(tmp_path):
    for i in range(3):
        mx.save_safetensors(
            str(tmp_path / f"model-{i:05d}-of-00003.safetensors"), {f"t{i}": mx.ones(2)}
        )
    assert sorted(mlxload.load(tmp_path)) == ["t0", "t1", "t2"]


@pytest.mark.parametrize("opener", ["load", "load_file", "safe_open"])
@pytest.mark.parametrize("value", ["false", "no", 1, None])
def test_zero_copy_takes_only_auto_true_or_false(tmp_path, opener, value):
    """A truthy typo such as "false" asked for mapping: the opposite of what it says."""
    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"w": mx.ones((2, 3))})
    with pytest.raises(mlxload.InvalidArgumentError) as info:
        getattr(mlxload, opener)(path, zero_copy=value)
    assert str(info.value) == f"zero_copy must be 'auto', True or False, got {value!r}"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("framework", ["numpy", "pt", "MLX"])
def test_safe_open_takes_only_the_mlx_framework(tmp_path, framework):
    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"w": mx.ones((2, 3))})
    with pytest.raises(mlxload.InvalidArgumentError) as info:
        mlxload.safe_open(path, framework=framework)
    assert str(info.value) == (
        f"framework must be 'mlx' or 'mx' (mlxload.safe_open loads MLX arrays), got {framework!r}"
    )
    assert isinstance(info.value, ValueError)


def test_a_misspelt_keyword_to_load_is_an_error_for_a_local_path_too(tmp_path):
    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"w": mx.ones((2, 3))})
    with pytest.raises(TypeError, match="unexpected keyword argument 'evict_pagecache'; it takes"):
        mlxload.load(path, evict_pagecache=True)
    assert mlxload.load(path, revision="main")["w"].shape == (2, 3)  # a Hub option: unused here


@pytest.mark.parametrize("prefer", [None, "model*.safetensors"])
def test_a_weights_file_linking_to_nothing_is_named_not_skipped(tmp_path, prefer):
    """It was left out silently: the checkpoint loaded with that file's tensors missing."""
    from mlxload.shards import checkpoint_files

    mx.save_safetensors(str(tmp_path / "model.safetensors"), {"m": mx.ones(2)})
    (tmp_path / "model-extra.safetensors").symlink_to(tmp_path / "gone")
    with pytest.raises(errors.MissingShardError) as e:
        checkpoint_files(tmp_path, prefer=prefer)
    assert str(e.value) == (
        f"{tmp_path / 'model-extra.safetensors'} is a link to {tmp_path / 'gone'}, which does "
        "not exist (a Hugging Face cache whose blob was deleted?); restore the file, or remove "
        "the link"
    )
    (tmp_path / "model-extra.safetensors").unlink()
    assert checkpoint_files(tmp_path, prefer=prefer).files == [tmp_path / "model.safetensors"]


def test_a_shard_rewritten_after_the_index_was_read_is_refused(tmp_path):
    """A Checkpoint opened before a split --force rewrote its directory read the shards it
    opened afterwards under the old index, silently returning the new model's tensors."""
    from mlxload.writer import split

    old_model = tmp_path / "a.safetensors"
    new_model = tmp_path / "b.safetensors"
    names = [f"w{i}" for i in range(6)]
    mx.save_safetensors(str(old_model), {n: mx.full((2048,), 1.0) for n in names})
    mx.save_safetensors(str(new_model), {n: mx.full((2048,), 2.0) for n in names})
    out = tmp_path / "out"
    split(old_model, out, max_shard_size="20KiB")
    where = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    ckpt = mlxload.load(out)
    assert ckpt[names[0]][0].item() == 1.0  # its shard is open now; the others are not
    split(new_model, out, max_shard_size="20KiB", force=True)
    later = next(n for n in names if where[n] != where[names[0]])
    with pytest.raises(errors.FileChangedError, match="replaced since the checkpoint was opened"):
        ckpt[later]


def test_a_shard_touched_after_the_index_was_read_is_called_modified(tmp_path):
    """Same inode, a new modification time: it said "replaced"."""
    from mlxload.writer import split

    src = tmp_path / "a.safetensors"
    mx.save_safetensors(str(src), {f"w{i}": mx.full((2048,), 1.0) for i in range(4)})
    split(src, tmp_path / "out", max_shard_size="20KiB")
    ckpt = mlxload.load(tmp_path / "out")
    shard = ckpt.files[-1]
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(
        errors.FileChangedError, match=r": modified \(written again, same size\) since the"
    ):
        ckpt.materialize()


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_two_names_of_one_file_in_a_directory_are_one_shard(tmp_path, kind):
    """``model.safetensors`` linked to ``weights.safetensors``: not a tensor stored twice."""
    mx.save_safetensors(str(tmp_path / "weights.safetensors"), {"a": mx.ones((3,))})
    link = tmp_path / "model.safetensors"
    if kind == "symlink":
        link.symlink_to("weights.safetensors")
    else:
        os.link(tmp_path / "weights.safetensors", link)
    ckpt = mlxload.load(tmp_path)
    assert [p.name for p in ckpt.files] == ["model.safetensors"]
    assert mx.array_equal(ckpt["a"], mx.ones((3,))).item()


def _run_without_root_overrides(code: str) -> str:
    """``code`` in a child Python that the file permissions bind (root drops its overrides)."""
    import shutil
    import subprocess
    import sys

    argv = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        capsh = shutil.which("capsh")
        if capsh is None:
            pytest.skip("running as root without capsh: permissions can't be enforced")
        quoted = " ".join(shlex.quote(a) for a in argv)
        argv = [capsh, "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", quoted]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_unreadable_files_and_unlistable_directories_are_named_permission_errors(tmp_path):
    """A bare PermissionError before; and a directory it may not list was 'no *.safetensors
    files' (Path.glob says nothing of EACCES)."""
    os.chmod(tmp_path, 0o755)
    noread = tmp_path / "noread.safetensors"
    mx.save_safetensors(str(noread), {"a": mx.ones((3,))})
    unlistable = tmp_path / "unlistable"
    unlistable.mkdir()
    mx.save_safetensors(str(unlistable / "model.safetensors"), {"a": mx.ones((3,))})
    os.chmod(noread, 0)
    os.chmod(unlistable, 0o311)
    try:
        out = _run_without_root_overrides(
            "import mlxload\n"
            f"for f in (lambda: mlxload.load_file({str(noread)!r}),\n"
            f"          lambda: mlxload.load({str(unlistable)!r})):\n"
            "    try:\n"
            "        f()\n"
            "    except mlxload.FilePermissionError as e:\n"
            "        print(isinstance(e, PermissionError), e)\n"
        )
    finally:
        os.chmod(unlistable, 0o755)
    assert out.splitlines() == [
        f"True {noread}: permission denied; check the permissions of the file and its directories",
        f"True {unlistable}: permission denied listing the directory; check its permissions",
    ]


def test_no_descriptor_left_raises_the_soft_limit_or_says_so(tmp_path):
    """At the soft limit, opening a file or index, or listing a directory, was a bare
    OSError EMFILE; now the soft limit is raised where the hard one allows."""
    import subprocess
    import sys

    path = _one_file(tmp_path)
    code = f"""
import os, resource, mlxload
def fill():
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return held
mlxload.load_file({str(path)!r}), mlxload.load({str(tmp_path)!r})  # (imports need files too)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))
held = fill()
print(sorted(mlxload.load_file({str(path)!r})), sorted(mlxload.load({str(tmp_path)!r})))
soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, soft))  # now nothing more to raise
held += fill()
try:
    mlxload.load_file({str(path)!r})
except mlxload.TooManyOpenFilesError as e:
    print(e)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "['a', 'b'] ['a', 'b']",
        f"{path}: too many open files in this process; raise the limit (`ulimit -n 4096`) and "
        "run again, or close files no longer used",
    ]


@pytest.mark.parametrize("layout", ["directory", "index"])
def test_a_fifo_named_like_a_shard_is_named_not_missing(tmp_path, layout):
    folder = tmp_path / "m"
    folder.mkdir()
    os.mkfifo(folder / "model.safetensors")
    if layout == "index":
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"a": "model.safetensors"}})
        )
        words = "names model.safetensors, which is a FIFO (named pipe); a shard must be a"
    else:
        words = "model.safetensors: is a FIFO (named pipe), named like a weights file"
    with pytest.raises(errors.NotARegularFileError, match=re.escape(words)):
        mlxload.load(folder)


def test_a_loop_of_links_is_named_as_such(tmp_path):
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to(loop)
    for call in (mlxload.load_file, mlxload.load, mlxload.safe_open):
        with pytest.raises(errors.NotARegularFileError, match="is a loop of symbolic links"):
            call(loop)


def test_an_index_naming_a_link_to_a_deleted_blob_calls_the_shard_missing(tmp_path):
    """A Hugging Face cache whose blob was deleted: download it again (not 'a shard must be a
    regular file')."""
    mx.save_safetensors(str(tmp_path / "model-00001-of-00002.safetensors"), {"a": mx.ones(2)})
    (tmp_path / "model-00002-of-00002.safetensors").symlink_to("../blobs/deadbeef")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(errors.MissingShardError, match=r"missing from .*download them again"):
        mlxload.load(tmp_path)


def test_two_numbered_shards_that_are_one_file_are_named_as_such(tmp_path):
    mx.save_safetensors(str(tmp_path / "model-00001-of-00002.safetensors"), {"a": mx.ones(2)})
    os.link(
        tmp_path / "model-00001-of-00002.safetensors", tmp_path / "model-00002-of-00002.safetensors"
    )
    with pytest.raises(
        errors.CheckpointError,
        match=re.escape(
            "model-00001-of-00002.safetensors and model-00002-of-00002.safetensors are the same"
        ),
    ):
        mlxload.load(tmp_path)
