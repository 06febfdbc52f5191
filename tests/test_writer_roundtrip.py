"""merge, split and align end to end: identical tensors, aligned outputs, index, overwrite."""

from __future__ import annotations

import json
import re

import mlx.core as mx
import numpy as np
import pytest
from safetensors import safe_open
from st_bytes import entry, write_raw
from writer_fixtures import (
    assert_aligned,
    checkpoint_bytes,
    mixed_tensors,
    tensor_bytes,
    write_numpy_file,
    write_sharded,
)

from mlxload.cli import main as cli_main
from mlxload.header import read_header
from mlxload.shards import checkpoint_files
from mlxload.writer import (
    EmptySourceError,
    InvalidSizeError,
    MetadataConflictError,
    OutputExistsError,
    OutputIsSourceError,
    OutputNotADirectoryError,
    SourceNotFoundError,
    WriterError,
    align,
    alignment_report,
    merge,
    split,
)
from mlxload.writer.execute import journal_path, temp_path
from mlxload.writer.layout import PAGE_SIZE
from mlxload.writer.plan import shard_name


def _shards(root):
    return checkpoint_files(root).files


def _assert_same_tensors(path, expected: dict[str, mx.array]) -> None:
    loaded = mx.load(str(path))
    assert sorted(loaded) == sorted(expected)
    for name, value in expected.items():
        assert loaded[name].dtype == value.dtype, name
        assert mx.array_equal(loaded[name], value).item(), name
    with safe_open(str(path), "numpy") as f:
        for name, value in expected.items():
            if value.dtype == mx.bfloat16:
                continue  # numpy has no bfloat16; the raw bytes are compared elsewhere
            np.testing.assert_array_equal(f.get_tensor(name), np.array(value))


def test_merge_of_sharded_checkpoint_is_aligned_and_identical(tmp_path):
    tensors = mixed_tensors()
    src = write_sharded(tmp_path / "src", tensors, 3)
    assert not alignment_report(src).ready  # mx.save_safetensors pads nothing
    out = tmp_path / "merged.safetensors"
    result = merge(src, out)
    assert result.outputs == [out]
    assert result.tensors == len(tensors)
    assert result.copied_bytes == result.total_bytes == sum(v.nbytes for v in tensors.values())
    assert_aligned(out)
    assert alignment_report(out).verdict() == "zero-copy ready: 100% of bytes"
    _assert_same_tensors(out, tensors)
    assert checkpoint_bytes(_shards(src)) == tensor_bytes(out)
    with safe_open(str(out), "numpy") as f:
        assert f.metadata() == {"format": "mlx"}
    assert not temp_path(out).exists() and not journal_path(out).exists()


def test_split_then_merge_round_trip_is_byte_identical(tmp_path):
    tensors = mixed_tensors(scale=30)
    src = write_sharded(tmp_path / "src", tensors, 2)
    once = tmp_path / "once.safetensors"
    merge(src, once)
    result = split(once, tmp_path / "split", max_shard_size="20KiB")
    shards = result.outputs
    assert len(shards) >= 2
    assert [p.name for p in shards] == [
        f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)
    ]
    for shard in shards:
        assert_aligned(shard)
        assert shard.stat().st_size <= 20 * 1024 or len(read_header(shard).tensors) == 1
    index = json.loads(result.index.read_text())
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in tensors.values())
    assert set(index["weight_map"]) == set(tensors)
    assert {index["weight_map"][n] for n in tensors} == {p.name for p in shards}
    assert checkpoint_bytes(shards) == tensor_bytes(once)
    for shard in shards:
        with safe_open(str(shard), "numpy") as f:
            assert f.metadata() == {"format": "mlx"}
    twice = tmp_path / "twice.safetensors"
    merge(tmp_path / "split", twice)
    assert twice.read_bytes() == once.read_bytes()
    _assert_same_tensors(twice, tensors)


@pytest.mark.parametrize("limit", [1000, "16KiB"])
def test_split_limit_with_no_room_for_data_is_refused(tmp_path, limit):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    with pytest.raises(
        InvalidSizeError, match=r"a max shard size of 1[06]\d* bytes leaves no room"
    ):
        split(src, tmp_path / "sp", max_shard_size=limit)
    assert not (tmp_path / "sp").exists()


def test_split_of_a_checkpoint_without_tensors_is_refused(tmp_path):
    # Its index would name no shard, and loading the output would find no file at all.
    src = tmp_path / "empty.safetensors"
    mx.save_safetensors(str(src), {}, metadata={"format": "mlx"})
    with pytest.raises(EmptySourceError) as e:
        split(src, tmp_path / "sp")
    assert str(e.value) == (
        f"{src}: has no tensors, so there is nothing to split (an index could name no shard); "
        "copy the file as it is, or merge it into one file"
    )
    assert not (tmp_path / "sp").exists()
    merged = merge(src, tmp_path / "m.safetensors")  # one file needs no index: still fine
    assert read_header(merged.outputs[0]).metadata == {"format": "mlx"}


def test_split_gives_a_tensor_too_big_for_any_shard_its_own(tmp_path):
    src = tmp_path / "w.safetensors"
    big = mx.arange(990_000 // 4, dtype=mx.float32)  # fits 1MB alone, not with its header
    mx.save_safetensors(str(src), {"big": big, "a": mx.ones(8), "b": mx.zeros(8)})
    result = split(src, tmp_path / "sp", max_shard_size="1MB")
    sizes = {p.name: p.stat().st_size for p in result.outputs}
    holders = {p.name: set(read_header(p).tensors) for p in result.outputs}
    (oversized,) = [n for n, size in sizes.items() if size > 1_000_000]
    assert holders[oversized] == {"big"}
    assert all(size <= 1_000_000 for n, size in sizes.items() if n != oversized)


def test_split_of_small_checkpoint_is_one_model_file(tmp_path):
    src = write_numpy_file(tmp_path / "ref.safetensors", metadata={"k": "v"})
    result = split(src, tmp_path / "one")
    assert [p.name for p in result.outputs] == ["model.safetensors"]
    assert result.index.name == "model.safetensors.index.json"
    assert tensor_bytes(result.outputs[0]) == tensor_bytes(src)
    assert read_header(result.outputs[0]).metadata == {"k": "v"}


def test_align_keeps_shards_and_rewrites_index(tmp_path):
    tensors = mixed_tensors()
    src = write_sharded(tmp_path / "src", tensors, 3, metadata={"format": "mlx", "a": "b"})
    out = tmp_path / "aligned"
    result = align(src, out)
    assert [p.name for p in result.outputs] == [p.name for p in _shards(src)]
    for before, after in zip(_shards(src), result.outputs, strict=True):
        assert_aligned(after)
        assert tensor_bytes(after) == tensor_bytes(before)
        assert read_header(after).metadata == {"format": "mlx", "a": "b"}
    src_index = json.loads((src / "model.safetensors.index.json").read_text())
    out_index = json.loads(result.index.read_text())
    assert out_index["weight_map"] == src_index["weight_map"]
    assert out_index["metadata"]["total_size"] == src_index["metadata"]["total_size"]
    assert alignment_report(out).ready
    for shard in result.outputs:
        expected = {k: tensors[k] for k in read_header(shard).tensors}
        _assert_same_tensors(shard, expected)


def test_align_in_place_swaps_files_and_is_idempotent(tmp_path):
    tensors = mixed_tensors()
    src = write_sharded(tmp_path / "src", tensors, 2)
    index_before = (src / "model.safetensors.index.json").read_bytes()
    before = checkpoint_bytes(_shards(src))
    result = align(src)
    assert len(result.outputs) == 2 and result.index is None  # index already right
    assert (src / "model.safetensors.index.json").read_bytes() == index_before
    assert checkpoint_bytes(_shards(src)) == before
    assert alignment_report(src).ready
    assert sorted(p.name for p in src.iterdir()) == sorted(
        ["model.safetensors.index.json"] + [p.name for p in result.outputs]
    )
    again = align(src)
    assert again.outputs == [] and len(again.unchanged) == 2
    # A journal left by an in-place align killed after committing that file goes too.
    stale = journal_path(result.outputs[0])
    stale.write_bytes(b'{"version": 1}')
    assert align(src).unchanged == again.unchanged
    assert not stale.exists()
    assert sorted(p.name for p in src.iterdir()) == sorted(
        ["model.safetensors.index.json"] + [p.name for p in result.outputs]
    )


def test_align_single_file_to_a_directory(tmp_path):
    src = tmp_path / "w.safetensors"
    mx.save_safetensors(str(src), {"x": mx.arange(7, dtype=mx.float32)})
    (tmp_path / "outdir").mkdir()
    result = align(src, tmp_path / "outdir")
    assert result.outputs == [tmp_path / "outdir" / "w.safetensors"]
    assert_aligned(result.outputs[0])


def test_merge_metadata_conflict_is_an_error_unless_told(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_numpy_file(src / "a.safetensors", seed=1, metadata={"format": "pt"})
    mx.save_safetensors(str(src / "b.safetensors"), {"z": mx.ones(3)}, metadata={"format": "mlx"})
    out = tmp_path / "m.safetensors"
    with pytest.raises(MetadataConflictError, match=r"__metadata__\['format'\] is 'pt'"):
        merge(src, out)
    assert not out.exists() and list(tmp_path.glob(".m.safetensors*")) == []
    merge(src, out, on_conflict="last")
    assert read_header(out).metadata == {"format": "mlx"}


def test_refuses_to_overwrite_without_force(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"m\.safetensors already exists; pass --force"):
        merge(src, out)
    assert out.read_bytes() == b"precious"
    merge(src, out, force=True)
    assert_aligned(out)
    split(src, tmp_path / "sp", max_shard_size="1MB")
    with pytest.raises(
        OutputExistsError, match=r"model\.safetensors\.index\.json|model\.safetensors already"
    ):
        split(src, tmp_path / "sp", max_shard_size="1MB")


def test_missing_source_and_hub_spec_errors(tmp_path):
    with pytest.raises(SourceNotFoundError, match="no such file or directory"):
        merge(tmp_path / "nope", tmp_path / "o.safetensors")
    assert isinstance(SourceNotFoundError("x"), WriterError)


@pytest.mark.parametrize("through_a_link", [False, True])
def test_a_snapshot_in_the_hub_cache_given_by_its_path_is_not_aligned_in_place(
    tmp_path, through_a_link
):
    # Its files link to content-addressed blobs: rewriting one breaks the cache (the hf://
    # form and load(align=True) refused this already).
    repo = tmp_path / "hub" / "models--org--m"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / ("0" * 40)
    write_sharded(blobs, mixed_tensors(), 2)
    snapshot.mkdir(parents=True)
    for f in sorted(blobs.iterdir()):
        (snapshot / f.name).symlink_to(f)
    given = snapshot
    if through_a_link:  # ln -s <snapshot> mymodel: still the cache
        given = tmp_path / "mymodel"
        given.symlink_to(snapshot)
    with pytest.raises(WriterError, match="refusing to align the Hugging Face cache in place"):
        align(given)
    assert all(p.is_symlink() for p in snapshot.iterdir())
    out = align(snapshot, tmp_path / "aligned")  # a copy elsewhere is fine
    assert alignment_report(out.index.parent).ready


def test_hub_spec_goes_through_mlxload_hub_resolve(tmp_path, monkeypatch):
    import mlxload.hub

    src = write_sharded(tmp_path / "snapshot", mixed_tensors(), 2)
    seen = []

    def fake_resolve(spec, **kwargs):
        seen.append((spec, kwargs))
        return src if str(spec).startswith("hf://") else None

    monkeypatch.setattr(mlxload.hub, "resolve", fake_resolve, raising=False)
    out = tmp_path / "m.safetensors"
    merge("hf://org/model@main", out)
    assert seen == [("hf://org/model@main", {"progress": None})]
    assert checkpoint_bytes(_shards(src)) == tensor_bytes(out)
    seen.clear()
    with pytest.raises(WriterError, match="refusing to align the Hugging Face cache in place"):
        align("hf://org/model")
    assert seen == []  # refused before downloading anything
    monkeypatch.chdir(tmp_path)  # no ./org/model here, so the bare name means the Hub too
    with pytest.raises(WriterError, match="refusing to align the Hugging Face cache in place"):
        align("org/model")
    assert seen == []
    assert alignment_report(align("hf://org/model", tmp_path / "al").index.parent).ready


@pytest.mark.parametrize(
    ("verb", "flag", "expected"),
    [("merge", "--no-progress", False), ("split", "--progress", True), ("align", None, False)],
)
def test_cli_passes_its_progress_choice_to_the_hub_download(
    tmp_path, monkeypatch, verb, flag, expected
):
    import mlxload.hub

    src = write_sharded(tmp_path / "snapshot", mixed_tensors(), 2)
    seen = []

    def fake_resolve(spec, **kwargs):
        seen.append(kwargs)
        return src

    monkeypatch.setattr(mlxload.hub, "resolve", fake_resolve, raising=False)
    # pytest's stderr is no terminal, so the default (no flag) is no bar
    args = [verb, "hf://org/model", str(tmp_path / ("o.safetensors" if verb == "merge" else "o"))]
    assert cli_main(args + ([flag] if flag else [])) == 0
    assert seen == [{"progress": expected}]


def test_cli_merge_split_align(tmp_path, capsys):
    tensors = mixed_tensors()
    src = write_sharded(tmp_path / "src", tensors, 2)
    out = tmp_path / "m.safetensors"
    assert cli_main(["merge", str(src), str(out), "--no-progress"]) == 0
    assert "merge: 9 tensors" in capsys.readouterr().out
    assert cli_main(["merge", str(src), str(out), "--no-progress"]) == 1
    assert "already exists; pass --force (force=True)" in capsys.readouterr().err
    assert cli_main(["split", str(out), str(tmp_path / "sp"), "--max-shard-size", "17KiB"]) == 0
    assert "model-00001-of-" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:  # a usage error, as argparse's own
        cli_main(["split", str(out), str(tmp_path / "x"), "--max-shard-size", "5XB"])
    assert usage.value.code == 2
    assert "error: argument --max-shard-size: cannot parse size '5XB'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert cli_main(["align", str(src), str(tmp_path / "al")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("zero-copy ready: 100% of bytes")
    from mlxload.cli import align as align_verb

    assert align_verb.main([str(src)]) == 0
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("write", "out_of", "where"),
    [
        (split, lambda f: f, "is a file, not a directory"),
        (align, lambda f: f, "is a file, not a directory"),
        (split, lambda f: f / "sub", "is under {file}, a file"),
        (align, lambda f: f / "sub", "is under {file}, a file"),
        (merge, lambda f: f / "m.safetensors", "is a file, not a directory"),
    ],
    ids=["split", "align", "split-under", "align-under", "merge-under"],
)
def test_output_directory_that_is_a_file_is_refused_before_writing(tmp_path, write, out_of, where):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    file = tmp_path / "out"
    file.write_bytes(b"precious")
    out = out_of(file)
    out_dir = out.parent if write is merge else out
    with pytest.raises(OutputNotADirectoryError) as e:
        write(src, out)
    assert isinstance(e.value, WriterError) and isinstance(e.value, NotADirectoryError)
    assert str(e.value) == (
        f"{out_dir}: {where.format(file=file)}; give a directory (it is created if missing) "
        "for the output"
    )
    assert file.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp, no journal


def test_output_that_is_a_file_is_refused_before_a_hub_download(tmp_path, monkeypatch):
    import mlxload.hub

    def no_download(spec, **kwargs):
        pytest.fail("downloaded before checking the output")

    monkeypatch.setattr(mlxload.hub, "resolve", no_download, raising=False)
    (tmp_path / "out").touch()
    with pytest.raises(OutputNotADirectoryError, match="out: is a file, not a directory"):
        split("hf://org/model", tmp_path / "out")
    with pytest.raises(OutputNotADirectoryError, match="out: is a file, not a directory"):
        merge("hf://org/model", tmp_path / "out" / "m.safetensors")


def test_cli_split_into_a_file_says_so(tmp_path, capsys):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    (tmp_path / "out").touch()
    assert cli_main(["split", str(src), str(tmp_path / "out"), "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        f"mlxload split: error: {tmp_path / 'out'}: is a file, not a directory; give a "
        "directory (it is created if missing) for the output\n"
    )


def test_an_empty_tensor_never_needs_a_copy(tmp_path):
    path = tmp_path / "e.safetensors"
    body = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
    body += b'"e":{"dtype":"F32","shape":[0],"data_offsets":[1,1]}}'
    body += b" " * (-(8 + len(body)) % 8)
    path.write_bytes(len(body).to_bytes(8, "little") + body + b"\x07")
    report = alignment_report(path)
    assert report.ready and report.copy_bytes == 0
    assert report.verdict() == "zero-copy ready: 100% of bytes"


def test_first_and_last_follow_the_shard_order_not_the_index_order(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    mx.save_safetensors(str(src / "model-00001-of-00002.safetensors"), {"model.w": mx.ones(2)},
                        metadata={"k": "shard1"})  # fmt: skip
    mx.save_safetensors(str(src / "model-00002-of-00002.safetensors"), {"lm_head.w": mx.ones(2)},
                        metadata={"k": "shard2"})  # fmt: skip
    weight_map = {"lm_head.w": "model-00002-of-00002.safetensors",  # sorted by name: 2 first
                  "model.w": "model-00001-of-00002.safetensors"}  # fmt: skip
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for choice, expected in (("first", "shard1"), ("last", "shard2")):
        out = tmp_path / f"{choice}.safetensors"
        merge(src, out, on_conflict=choice)
        assert read_header(out).metadata == {"k": expected}


def test_align_in_place_keeps_file_permissions(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    shards = _shards(src)
    for shard in shards:
        shard.chmod(0o600)
    align(src)
    assert [oct(p.stat().st_mode & 0o777) for p in _shards(src)] == ["0o600"] * len(shards)


def test_merge_into_a_new_directory_given_with_a_slash(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    result = merge(src, f"{tmp_path / 'newdir'}/")
    assert result.outputs == [tmp_path / "newdir" / "model.safetensors"]
    assert (tmp_path / "newdir").is_dir()


def test_output_header_over_the_readers_limit_is_refused_before_writing(tmp_path, monkeypatch):
    from mlxload.writer import OutputHeaderTooLargeError
    from mlxload.writer import plan as plan_mod

    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    monkeypatch.setattr(plan_mod, "MAX_HEADER_SIZE", 1000)  # the real limit is 100 MB
    out = tmp_path / "m.safetensors"
    with pytest.raises(
        OutputHeaderTooLargeError, match=r"its header would be \d+ bytes, over the 1000"
    ):
        merge(src, out)
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "src"]
    before = {p: p.read_bytes() for p in _shards(src)}
    with pytest.raises(OutputHeaderTooLargeError):
        align(src)
    assert {p: p.read_bytes() for p in _shards(src)} == before


def test_split_keeps_each_shards_header_under_the_readers_limit(tmp_path, monkeypatch):
    """Thousands of tensors with long names: a split by bytes alone put them all in one shard
    and then refused it, advising to split."""
    from mlxload.writer import OutputHeaderTooLargeError
    from mlxload.writer import plan as plan_mod

    monkeypatch.setattr(plan_mod, "MAX_HEADER_SIZE", 2 * PAGE_SIZE - 8)  # real: 100 MB
    header = {f"{i:02d}." + "n" * 1000: entry("U8", [1], i, i + 1) for i in range(40)}
    src = write_raw(tmp_path / "src.safetensors", header, bytes(range(40)))
    with pytest.raises(OutputHeaderTooLargeError) as e:
        merge(src, tmp_path / "m.safetensors")
    assert re.fullmatch(
        r".*m\.safetensors: its header would be \d+ bytes, over the 32760-byte limit "
        r"safetensors readers accept: too many tensors or too much metadata for one file; "
        r"split the checkpoint into shards instead \(mlxload split\)",
        str(e.value),
    )
    result = split(src, tmp_path / "s")  # 5GB: the header limit alone makes it 2 shards
    assert [p.name for p in result.outputs] == [shard_name(i, 2) for i in (1, 2)]
    assert all(read_header(p).data_start <= 2 * PAGE_SIZE for p in result.outputs)
    assert checkpoint_bytes(result.outputs) == tensor_bytes(src)


def test_split_whose_metadata_alone_is_over_the_header_limit_says_so(tmp_path, monkeypatch):
    from mlxload.writer import OutputHeaderTooLargeError
    from mlxload.writer import plan as plan_mod

    monkeypatch.setattr(plan_mod, "MAX_HEADER_SIZE", 2 * PAGE_SIZE - 8)
    src = write_raw(
        tmp_path / "src.safetensors",
        {"__metadata__": {"notes": "x" * 40000}, "a": entry("U8", [1], 0, 1)},
        b"\x07",
    )
    with pytest.raises(OutputHeaderTooLargeError) as e:
        split(src, tmp_path / "s")
    assert str(e.value) == (
        f"{tmp_path / 's' / 'model.safetensors'}: its header would be 49144 bytes, over the "
        "32760-byte limit safetensors readers accept: the 40012-byte __metadata__ every shard "
        "repeats leaves no room for even one tensor's entry; give the checkpoint less metadata"
    )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("9" * 5000, r"cannot parse size 99999999999999999999\.\.\.: too long"),
        (2**64, r"size must be under 2\*\*63 bytes, got 18446744073709551616\.\.\."),
        (
            "1" + "0" * 30 + "GB",
            r"size must be under 2\*\*63 bytes, got 10000000000000000000\.\.\.",
        ),
    ],
)
def test_absurd_shard_sizes_are_invalid_size_errors(tmp_path, size, message):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    with pytest.raises(InvalidSizeError, match=message):
        split(src, tmp_path / "sp", max_shard_size=size)


def test_split_over_another_split_replaces_its_shards_only_with_force(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=30), 2)
    out = tmp_path / "out"
    first = split(src, out, max_shard_size="20KiB")
    assert len(first.outputs) > 2
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds files of another checkpoint"):
        split(src, out, max_shard_size="1MB")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in first.outputs] + [first.index.name, "notes.txt"]
    )  # nothing written or removed
    second = split(src, out, max_shard_size="1MB", force=True)
    assert second.removed == first.outputs
    assert sorted(p.name for p in out.iterdir()) == [
        "model.safetensors",
        "model.safetensors.index.json",
        "notes.txt",
    ]
    assert checkpoint_bytes([out / "model.safetensors"]) == checkpoint_bytes(_shards(src))


def test_split_beside_its_own_source_shards_is_refused(tmp_path):
    """The source can't be removed (it is the input) and can't stay beside the new shards."""
    src = tmp_path / "d"
    src.mkdir()
    mx.save_safetensors(str(src / "model.safetensors"), mixed_tensors(scale=30))
    before = (src / "model.safetensors").read_bytes()
    with pytest.raises(OutputIsSourceError, match=r"holds this split's own source file\(s\) "):
        split(src / "model.safetensors", src, max_shard_size="20KiB", force=True)
    assert (src / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in src.iterdir()) == ["model.safetensors"]


def test_a_directory_named_like_a_shard_is_not_a_shard(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    out = tmp_path / "out"
    (out / "model-00001-of-00009.safetensors").mkdir(parents=True)
    result = split(src, out, max_shard_size="1MB")
    assert result.removed == [] and (out / "model-00001-of-00009.safetensors").is_dir()


@pytest.mark.parametrize("verb", ["split", "align", "merge"])
def test_split_align_and_merge_into_a_directory_copy_config_and_tokenizer_along(tmp_path, verb):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "tokenizer.json").write_text("{}")
    (src / "README.md").write_text("not copied")
    out = tmp_path / "out"
    out.mkdir()
    (out / "tokenizer.json").write_text('{"mine": 1}')  # never overwritten
    write = {
        "split": lambda: split(src, out, max_shard_size="1MB"),
        "align": lambda: align(src, out),
        "merge": lambda: merge(src, out),  # into a directory: a model directory again
    }
    result = write[verb]()
    assert [p.name for p in result.companions] == ["config.json"]
    assert (out / "config.json").read_text() == '{"model_type": "llama"}'
    assert (out / "tokenizer.json").read_text() == '{"mine": 1}'
    assert not (out / "README.md").exists()


def test_merge_into_a_file_copies_nothing_beside_it(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    (src / "config.json").write_text("{}")
    result = merge(src, tmp_path / "one.safetensors")
    assert result.companions == [] and not (tmp_path / "config.json").exists()


def test_split_of_a_single_file_copies_none_of_its_neighbours(tmp_path):
    (tmp_path / "notes.json").write_text("{}")
    mx.save_safetensors(str(tmp_path / "lora.safetensors"), mixed_tensors())
    result = split(tmp_path / "lora.safetensors", tmp_path / "out", max_shard_size="1MB")
    assert result.companions == [] and not (tmp_path / "out" / "notes.json").exists()


@pytest.mark.parametrize("verb", ["split", "align"])
def test_the_only_weights_file_of_a_model_directory_brings_its_config_along(tmp_path, verb):
    """`mlxload split m/model.safetensors out` must give a loadable model, as `split m out`."""
    src = tmp_path / "m"
    src.mkdir()
    mx.save_safetensors(str(src / "model.safetensors"), mixed_tensors())
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "tokenizer.json").write_text("{}")
    out = tmp_path / "out"
    if verb == "split":
        result = split(src / "model.safetensors", out, max_shard_size="1MB")
    else:
        result = align(src / "model.safetensors", f"{out}/")
    assert sorted(p.name for p in result.companions) == ["config.json", "tokenizer.json"]
    assert (out / "config.json").read_text() == '{"model_type": "llama"}'


def test_the_models_weights_file_aligned_to_a_file_copies_nothing_beside_it(tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    mx.save_safetensors(str(src / "model.safetensors"), mixed_tensors())
    (src / "config.json").write_text("{}")
    result = align(src / "model.safetensors", tmp_path / "aligned.safetensors")
    assert result.companions == [] and not (tmp_path / "config.json").exists()


def test_a_file_beside_the_models_own_weights_copies_nothing(tmp_path):
    """adapters.safetensors beside model.safetensors: the config.json is the model's."""
    src = tmp_path / "m"
    src.mkdir()
    mx.save_safetensors(str(src / "model.safetensors"), mixed_tensors())
    mx.save_safetensors(str(src / "adapters.safetensors"), mixed_tensors())
    (src / "config.json").write_text("{}")
    result = split(src / "adapters.safetensors", tmp_path / "out", max_shard_size="1MB")
    assert result.companions == [] and not (tmp_path / "out" / "config.json").exists()


def test_forced_split_replaces_the_old_models_config(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    (src / "config.json").write_text('{"model_type": "new"}')
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "old"}')
    (out / "model.safetensors").write_bytes(b"old")
    result = split(src, out, max_shard_size="1MB", force=True)
    assert [p.name for p in result.companions] == ["config.json"]
    assert (out / "config.json").read_text() == '{"model_type": "new"}'


def test_a_companion_that_cannot_be_copied_is_skipped_with_a_warning(tmp_path, monkeypatch):
    from mlxload.writer import companions

    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    (src / "config.json").write_text("{}")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(companions.shutil, "copyfile", full)
    with pytest.warns(UserWarning, match="config.json: not copied"):
        result = split(src, tmp_path / "out", max_shard_size="1MB")
    assert result.companions == [] and result.index is not None
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("indexed", [True, False])
@pytest.mark.parametrize("out", ["dir", "dir/", "dir/model.safetensors"])
def test_merge_into_the_directory_of_its_shards_is_refused(tmp_path, indexed, out):
    """The merged file would sit beside its shards: a loader of that directory (without an
    index) would find every tensor twice."""
    src = write_sharded(tmp_path / "dir", mixed_tensors(), 2)
    if not indexed:
        (src / "model.safetensors.index.json").unlink()
    before = sorted(p.name for p in src.iterdir())
    words = "the new file would sit beside them" if indexed else "would find every tensor twice"
    with pytest.raises(OutputIsSourceError, match=words):
        merge(src, str(tmp_path / out))
    assert sorted(p.name for p in src.iterdir()) == before


def _indexed(root, stem: str, index_name: str | None = None):
    """Two shards ``STEM-0000i-of-00002.safetensors`` and their index, by default
    ``STEM.safetensors.index.json`` (a diffusers unet: ``diffusion_pytorch_model``)."""
    index_name = index_name or f"{stem}.safetensors.index.json"
    root.mkdir()
    weight_map = {}
    for k in (1, 2):
        name = f"{stem}-{k:05d}-of-00002.safetensors"
        mx.save_safetensors(str(root / name), {f"w{k}": mx.arange(2 * k)})
        weight_map[f"w{k}"] = name
    index = {"metadata": {"total_size": 24}, "weight_map": weight_map}
    (root / index_name).write_text(json.dumps(index))
    return {p.name: p.read_bytes() for p in root.iterdir()}


@pytest.mark.parametrize("force", [False, True])
def test_merge_beside_its_own_index_never_removes_it(tmp_path, force):
    """Not another checkpoint's index: this merge's input, which --force once deleted."""
    src = tmp_path / "unet"
    before = _indexed(
        src, "diffusion_pytorch_model", "diffusion_pytorch_model.safetensors.index.json"
    )
    with pytest.raises(OutputIsSourceError) as e:
        merge(src, f"{src}/", force=force)
    assert str(e.value) == (
        f"{src} holds this merge's own source file(s) (diffusion_pytorch_model.safetensors."
        "index.json): they are its input, so they are never removed, and the new file would "
        "sit beside them, where a loader of the directory would go by that index and never "
        "read the new file; merge into another directory"
    )
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_split_over_its_own_index_is_refused(tmp_path):
    src = tmp_path / "w"
    before = _indexed(src, "weights", "model.safetensors.index.json")
    with pytest.raises(OutputIsSourceError) as e:
        split(src, src, max_shard_size="20KiB", force=True)
    assert str(e.value) == (
        f"{src / 'model.safetensors.index.json'} is this split's own source index: it is the "
        "input, so it is never replaced; split into another directory"
    )
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_a_merged_copy_beside_indexed_shards_is_the_usual_layout(tmp_path):
    """Mistral ships consolidated.safetensors beside its indexed shards: loaders read the index."""
    src = write_sharded(tmp_path / "dir", mixed_tensors(), 2)
    merge(src, src / "consolidated.safetensors")
    assert checkpoint_files(src).files == sorted(src.glob("model-*.safetensors"))


def test_a_file_merged_into_model_safetensors_beside_itself_is_refused(tmp_path):
    """Without an index, a loader of the directory would read both copies."""
    path = write_numpy_file(tmp_path / "weights.safetensors")
    with pytest.raises(OutputIsSourceError, match=r"beside the file\(s\) it merges \(weights"):
        merge(path, tmp_path / "model.safetensors")


def test_merging_one_file_beside_itself_under_another_name_is_fine(tmp_path):
    path = write_numpy_file(tmp_path / "a.safetensors")
    merge(path, tmp_path / "b.safetensors")
    assert checkpoint_bytes([tmp_path / "b.safetensors"]) == checkpoint_bytes([path])


@pytest.mark.parametrize("verb", ["merge", "align"])
def test_writing_model_safetensors_beside_another_checkpoints_shards_needs_force(tmp_path, verb):
    """As a split does: the other shards would be read with the new file (model*.safetensors)."""
    src = tmp_path / "src" / "model.safetensors"
    src.parent.mkdir()
    mx.save_safetensors(str(src), mixed_tensors(seed=3))
    other = write_sharded(tmp_path / "other", mixed_tensors(seed=4), 2)
    shards = sorted(p.name for p in other.glob("model-*.safetensors"))
    write = (lambda **kw: merge(src, f"{other}/", **kw)) if verb == "merge" else (
        lambda **kw: align(src, other, **kw))  # fmt: skip
    with pytest.raises(OutputExistsError, match=r"holds files of another checkpoint \(model-"):
        write()
    assert sorted(p.name for p in other.glob("model*.safetensors")) == shards
    result = write(force=True)
    assert sorted(p.name for p in result.removed) == [*shards, "model.safetensors.index.json"]
    assert checkpoint_files(other).files == [other / "model.safetensors"]
    assert checkpoint_bytes([other / "model.safetensors"]) == checkpoint_bytes([src])


def test_align_of_a_directory_to_a_file_name_is_refused(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    with pytest.raises(OutputNotADirectoryError, match=r"out\.safetensors: names a file, but "):
        align(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_a_dangling_symlink_at_the_output_needs_force_like_any_file(tmp_path):
    src = write_numpy_file(tmp_path / "a.safetensors")
    out = tmp_path / "out.safetensors"
    out.symlink_to(tmp_path / "nowhere.safetensors")
    with pytest.raises(OutputExistsError, match=r"out\.safetensors already exists"):
        merge(src, out)
    assert out.is_symlink()
    merge(src, out, force=True)
    assert not out.is_symlink() and checkpoint_bytes([out]) == checkpoint_bytes([src])


def test_split_limit_the_metadata_alone_fills_is_refused(tmp_path):
    """Every shard's header repeats __metadata__: with 30 KB of it and a 20 KB limit, split
    wrote one tensor per 32 KB shard, each over the limit, without a word."""
    src = tmp_path / "meta.safetensors"
    mx.save_safetensors(
        str(src), {f"t{i}": mx.ones(25, mx.float32) for i in range(5)}, {"big": "x" * 30000}
    )
    with pytest.raises(InvalidSizeError) as e:
        split(src, tmp_path / "sp", max_shard_size=20000)
    assert re.fullmatch(
        r"the checkpoint's __metadata__ takes 300\d\d bytes, which every shard's header "
        r"repeats: a max shard size of 20000 bytes leaves no room for tensor data; give more "
        r"than 32768 \(e\.g\. 5GB\)",
        str(e.value),
    )
    assert not (tmp_path / "sp").exists()
    assert len(split(src, tmp_path / "sp", max_shard_size=40000).outputs) == 1


@pytest.mark.parametrize("verb", ["split", "merge"])
def test_an_adapter_beside_an_unindexed_model_is_left_out_with_a_warning(tmp_path, verb):
    """A model directory without an index is read as loading it as a model reads it (mlx-lm's
    ``model*.safetensors``): an ``adapters.safetensors`` beside it written into the shards would
    make them unloadable."""
    src = tmp_path / "src"
    src.mkdir()
    model = mixed_tensors()
    mx.save_safetensors(str(src / "model.safetensors"), model)
    mx.save_safetensors(str(src / "adapters.safetensors"), {"lora_a": mx.zeros((4, 2))})
    out = tmp_path / "out"
    write = {
        "split": lambda: split(src, out, max_shard_size="1MB"),
        "merge": lambda: merge(src, out / "model.safetensors"),
    }
    with pytest.warns(
        UserWarning, match=r"left out adapters\.safetensors \(give a file as its own"
    ):
        write[verb]()
    written = mlxload_load_all(out)
    assert sorted(written) == sorted(model)


@pytest.mark.parametrize("in_place", [True, False])
def test_align_of_a_directory_aligns_every_file_it_holds(tmp_path, in_place):
    """align keeps each file apart: an adapters.safetensors beside the model is aligned too,
    as load(align=True) and inspect's verdict count it."""
    import warnings

    src = tmp_path / "src"
    src.mkdir()
    mx.save_safetensors(str(src / "model.safetensors"), mixed_tensors())
    mx.save_safetensors(str(src / "adapters.safetensors"), {"a": mx.ones((3,)), "b": mx.ones(3)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        align(src) if in_place else align(src, tmp_path / "out")
    out = src if in_place else tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "adapters.safetensors",
        "model.safetensors",
    ]
    assert alignment_report(checkpoint_files(out)).ready


def test_an_adapter_file_given_as_the_source_is_written(tmp_path):
    mx.save_safetensors(str(tmp_path / "model.safetensors"), mixed_tensors())
    mx.save_safetensors(str(tmp_path / "adapters.safetensors"), {"lora_a": mx.zeros((4, 2))})
    merge(tmp_path / "adapters.safetensors", tmp_path / "out.safetensors")
    assert list(mx.load(str(tmp_path / "out.safetensors"))) == ["lora_a"]


def mlxload_load_all(path) -> dict[str, mx.array]:
    import mlxload

    return dict(mlxload.load(path).items())


def test_progress_is_reported_inside_a_large_tensor(tmp_path):
    """A 40 MiB tensor said nothing until it was all copied; now every 16 MiB."""
    src = tmp_path / "big.safetensors"
    header = {"small": entry("U8", [8], 0, 8), "big": entry("U8", [40 << 20], 8, 8 + (40 << 20))}
    write_raw(src, header, bytes(8 + (40 << 20)))
    calls = []
    merge(src, tmp_path / "out.safetensors", progress=lambda *a: calls.append(a))
    total = 8 + (40 << 20)
    done = [d for d, _, _ in calls]
    assert all(t == total for _, t, _ in calls) and done[-1] == total
    assert done == sorted(done) and len(set(done)) == len(done)  # (each end reported once)
    big = [d for d, _, name in calls if name == "big"]
    assert len(big) == 3 and big[1] - big[0] == 16 << 20 and big[2] - big[1] == 8 << 20
