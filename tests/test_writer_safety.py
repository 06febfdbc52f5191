"""Writing over the sources, read-only destinations, error messages, journals, align's OUT."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import save_file
from writer_fixtures import (
    assert_aligned,
    checkpoint_bytes,
    mixed_tensors,
    tensor_bytes,
    write_numpy_file,
    write_sharded,
)

from mlxload import free_space
from mlxload.cli import main as cli_main
from mlxload.shards import checkpoint_files
from mlxload.writer import (
    InsufficientSpaceError,
    OutputExistsError,
    OutputIsSourceError,
    OutputNotADirectoryError,
    WriteFailedError,
    WriterArgumentError,
    WriterError,
    align,
    merge,
    split,
)
from mlxload.writer import execute as execute_mod


def _two_shards(root: Path) -> Path:
    """The review's repro: shard 1 {b: uint8[100]}, shard 2 {d: int64[2000]}, and an index."""
    root.mkdir()
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    save_file({"b": np.arange(100, dtype=np.uint8)}, str(root / names[0]))
    save_file({"d": np.arange(2000, dtype=np.int64)}, str(root / names[1]))
    index = {"metadata": {"total_size": 16100}, "weight_map": {"b": names[0], "d": names[1]}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


# --- outputs that are sources ------------------------------------------------------------


def test_split_into_its_own_directory_is_refused_and_touches_nothing(tmp_path, capsys):
    src = _two_shards(tmp_path / "inpl")
    before = _files(src)
    with pytest.raises(
        OutputIsSourceError,
        match=r"inpl/model-00001-of-00002\.safetensors is a source file of this split: writing "
        r"it would replace tensor data still to be read; write to another directory",
    ):
        split(src, src, max_shard_size=20000, force=True)
    assert _files(src) == before
    args = ["split", str(src), str(src), "--max-shard-size", "20000", "--force"]
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("mlxload split: error: ") and "is a source file of this split" in err
    assert _files(src) == before


def test_merge_onto_its_own_source_file_is_refused(tmp_path):
    src = tmp_path / "one"
    src.mkdir()
    write_numpy_file(src / "model.safetensors")
    before = _files(src)
    with pytest.raises(OutputIsSourceError, match=r"mlxload align rewrites files in place"):
        merge(src, src, force=True)  # OUT is a directory: src/model.safetensors
    assert _files(src) == before


def test_sources_are_opened_before_the_first_write(tmp_path):
    """A source renamed over mid-run is still read from the file that was planned."""
    src = _two_shards(tmp_path / "src")
    expected = checkpoint_bytes(checkpoint_files(src).files)
    swapped = []

    def progress(done, total, name):
        if not swapped:  # after the first tensor: replace the file of the other one
            unread = src / (
                "model-00001-of-00002.safetensors"
                if name == "d"
                else "model-00002-of-00002.safetensors"
            )
            other = tmp_path / "other.safetensors"
            save_file({"zz": np.zeros(5000, dtype=np.int64)}, str(other))
            os.replace(other, unread)
            swapped.append(name)

    result = split(src, tmp_path / "out", max_shard_size=20000, progress=progress)
    assert swapped and len(result.outputs) == 2
    assert checkpoint_bytes(result.outputs) == expected


# --- read-only destinations and cleanup ----------------------------------------------------


def _read_only(monkeypatch, root: Path, code: int = errno.EROFS) -> None:
    """Make writes under ``root`` fail as a read-only mount does (tests run as root)."""
    real_open, real_unlink, real_mkdir = os.open, os.unlink, os.mkdir
    inside = lambda p: str(os.path.abspath(p)).startswith(str(root))  # noqa: E731

    def fake_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_unlink(path, *args, **kwargs):
        if inside(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_unlink(path, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            if os.path.exists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "unlink", fake_unlink)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    if sys.version_info < (3, 11):  # pathlib kept its own references to os.mkdir/os.unlink
        import pathlib

        monkeypatch.setattr(pathlib._NormalAccessor, "mkdir", staticmethod(fake_mkdir))
        monkeypatch.setattr(pathlib._NormalAccessor, "unlink", staticmethod(fake_unlink))


def test_a_destination_without_write_permission_says_so_once(tmp_path, monkeypatch):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    dest = tmp_path / "theirs"
    dest.mkdir()
    _read_only(monkeypatch, dest, errno.EACCES)
    with pytest.raises(WriteFailedError) as info:
        merge(src, dest / "m.safetensors")
    assert info.value.errno == errno.EACCES
    message = str(info.value)
    assert message.startswith(f"writing {dest / 'm.safetensors'} failed: no permission to write ")
    assert "(Permission denied): check who owns its directory; no partial output is left" in message
    assert message.lower().count("permission denied") == 1
    assert list(dest.iterdir()) == []


def test_read_only_destination_is_a_write_failed_error(tmp_path, monkeypatch):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    dest = tmp_path / "ro"
    dest.mkdir()
    _read_only(monkeypatch, dest)
    with pytest.raises(WriteFailedError) as info:
        merge(src, dest / "m.safetensors")
    assert info.value.errno == errno.EROFS
    assert str(info.value) == (
        f"writing {dest / 'm.safetensors'} failed: the destination is read-only "
        "(Read-only file system); no partial output is left, and nothing was written under "
        "that name"
    )
    with pytest.raises(WriteFailedError, match=r"ro/sub/m\.safetensors failed: the destination"):
        merge(src, dest / "sub" / "m.safetensors")  # the directory can't be created either
    assert list(dest.iterdir()) == []


def test_failing_cleanup_does_not_hide_the_error(tmp_path, monkeypatch):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    out = tmp_path / "out" / "m.safetensors"
    real_unlink = os.unlink

    def no_unlink(path, *args, **kwargs):
        if str(path).startswith(str(out.parent)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "unlink", no_unlink)
    monkeypatch.setattr(execute_mod, "copy_range", full)
    with pytest.raises(WriteFailedError, match="failed: the disk is full") as info:
        merge(src, out)
    assert info.value.errno == errno.ENOSPC


def test_os_error_messages_have_no_errno_prefix(tmp_path, monkeypatch):
    e = WriteFailedError(errno.EIO, "writing x failed")
    assert str(e) == "writing x failed" and e.errno == errno.EIO
    assert str(InsufficientSpaceError(errno.ENOSPC, "not enough")) == "not enough"
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    usage = type("U", (), {"free": 10})
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage)
    monkeypatch.setattr(free_space, "_free_space_leaves_out_purgeable", lambda: False)
    with pytest.raises(InsufficientSpaceError) as info:
        merge(src, tmp_path / "m.safetensors")
    assert str(info.value).startswith("not enough free space in ")
    assert info.value.errno == errno.ENOSPC


def test_a_failed_split_leaves_nothing_and_its_rerun_needs_no_force(tmp_path, monkeypatch):
    """The shards written before the failure were never renamed into place: nothing is left
    that a rerun would have to be told to replace."""
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 2)
    out = tmp_path / "out"
    real = execute_mod._Run._write_temp
    calls = []

    def fail_in_second_output(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(execute_mod._Run, "_write_temp", fail_in_second_output)
    with pytest.raises(WriteFailedError, match="an I/O error occurred"):
        split(src, out, max_shard_size="20KiB")
    assert sorted(p.name for p in out.iterdir()) == []
    monkeypatch.undo()
    result = split(src, out, max_shard_size="20KiB")
    assert [p.name for p in result.outputs] == [
        f"model-0000{i}-of-00004.safetensors" for i in (1, 2, 3, 4)
    ]
    assert checkpoint_bytes(result.outputs) == checkpoint_bytes(sorted(src.glob("*.safetensors")))


@pytest.mark.parametrize("stop", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()])
def test_a_forced_split_that_stops_leaves_the_checkpoint_it_replaces_whole(
    tmp_path, monkeypatch, stop
):
    """Renaming each shard as it was done left the new first shard beside the old second one
    and the old index: a checkpoint that loaded, silently mixing the two models' weights."""
    out = tmp_path / "out"
    old = split(write_sharded(tmp_path / "a", mixed_tensors(1, scale=50), 2), out,
                max_shard_size="20KiB")  # fmt: skip
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    new_src = write_sharded(tmp_path / "b", mixed_tensors(2, scale=50), 2)
    real = execute_mod._Run._write_temp
    calls = []

    def stop_in_the_second_output(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise stop
        return real(self, *args, **kwargs)

    monkeypatch.setattr(execute_mod._Run, "_write_temp", stop_in_the_second_output)
    with pytest.raises(type(stop)):
        split(new_src, out, max_shard_size="20KiB", force=True)
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert after == before
    assert checkpoint_bytes(old.outputs) == checkpoint_bytes(sorted(out.glob("model-*")))
    monkeypatch.undo()
    result = split(new_src, out, max_shard_size="20KiB", force=True)
    assert checkpoint_bytes(result.outputs) == checkpoint_bytes(
        sorted(new_src.glob("*.safetensors"))
    )


# --- align: what OUT means ---------------------------------------------------------------


def test_align_one_file_directory_to_a_new_directory(tmp_path):
    src = tmp_path / "onedir"
    src.mkdir()
    write_numpy_file(src / "model.safetensors")
    result = align(src, tmp_path / "outdir_new")
    assert (tmp_path / "outdir_new").is_dir()
    assert result.outputs == [tmp_path / "outdir_new" / "model.safetensors"]
    assert tensor_bytes(result.outputs[0]) == tensor_bytes(src / "model.safetensors")
    assert_aligned(result.outputs[0])


def test_align_file_to_a_path_ending_in_a_slash_makes_a_directory(tmp_path):
    src = write_numpy_file(tmp_path / "single.safetensors")
    result = align(src, f"{tmp_path / 'newdir'}/")
    assert result.outputs == [tmp_path / "newdir" / "single.safetensors"]
    assert_aligned(result.outputs[0])
    plain = align(src, tmp_path / "named.safetensors")  # no slash: a file name
    assert plain.outputs == [tmp_path / "named.safetensors"]


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_align_onto_itself_is_in_place(tmp_path, kind):
    root = tmp_path / "onedir"
    root.mkdir()
    file = write_numpy_file(root / "model.safetensors")
    before = tensor_bytes(file)
    target = root if kind == "directory" else file
    result = align(target, target)  # no force needed, as for align(target)
    assert result.outputs == [file]
    assert_aligned(file)
    assert tensor_bytes(file) == before
    assert sorted(p.name for p in root.iterdir()) == ["model.safetensors"]
    again = align(target, target)
    assert again.outputs == [] and again.unchanged == [file]


def test_align_onto_another_name_of_the_same_file_is_in_place(tmp_path):
    # Model.safetensors for model.safetensors on a case-insensitive APFS volume is such a name;
    # a hard link is one a case-sensitive file system can show.
    file = write_numpy_file(tmp_path / "model.safetensors")
    before = tensor_bytes(file)
    other_name = tmp_path / "Model.safetensors"
    os.link(file, other_name)
    result = align(file, other_name)  # no force needed: nothing but this file is replaced
    assert result.outputs == [other_name]
    assert_aligned(other_name)
    assert tensor_bytes(other_name) == before
    again = align(other_name, other_name)
    assert again.outputs == [] and again.unchanged == [other_name]


@pytest.mark.parametrize("verb", ["merge", "align"])
@pytest.mark.parametrize("name", ["outnoext", "out.bin", "config.json"])
def test_an_output_file_must_be_named_safetensors(tmp_path, verb, name):
    """`mlxload merge sp outnoext` wrote a file mx.load and mlx-lm would never read, and with
    --force, `merge sp config.json` turned the model's config into one."""
    from mlxload.writer import OutputNameError

    src = tmp_path / "src"
    src.mkdir()
    one = src / "model.safetensors"
    mx.save_safetensors(str(one), mixed_tensors())
    existing = {"config.json": b'{"model_type": "llama"}'}.get(name)
    if existing:
        (tmp_path / name).write_bytes(existing)
    with pytest.raises(OutputNameError) as e:
        kw = {"force": True}
        merge(src, tmp_path / name, **kw) if verb == "merge" else align(one, tmp_path / name, **kw)
    assert str(e.value) == (
        f"{tmp_path / name}: an output file must end with .safetensors (mx.load and mlx-lm "
        f"read no other name); name it {name}.safetensors, or end the path with / to write "
        "into a directory"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src", *([name] * bool(existing))])
    if existing:
        assert (tmp_path / name).read_bytes() == existing


def test_align_of_a_link_onto_its_target_is_not_in_place(tmp_path):
    # A Hugging Face snapshot entry links to its blob: writing the blob, an existing file not
    # named .safetensors, is refused (with --force too); a .safetensors target needs --force.
    from mlxload.writer import OutputNameError

    (tmp_path / "blobs").mkdir()
    blob = write_numpy_file(tmp_path / "blobs" / "0123abcd")
    link = tmp_path / "snapshots" / "model.safetensors"
    link.parent.mkdir()
    link.symlink_to(blob)
    for force in (False, True):
        with pytest.raises(OutputNameError):
            align(link, blob, force=force)
    named = write_numpy_file(tmp_path / "blobs" / "named.safetensors")
    link.unlink()
    link.symlink_to(named)
    with pytest.raises(OutputExistsError):
        align(link, named)


def test_source_replaced_between_planning_and_copying_is_refused(tmp_path, monkeypatch):
    """The plan's offsets come from one file's header; they must never be applied to another."""
    import mlx.core as mx

    from mlxload.errors import FileChangedError
    from mlxload.writer import api

    src = tmp_path / "src.safetensors"
    mx.save_safetensors(str(src), {"a": mx.array([1.0, 2.0]), "b": mx.arange(4)})
    other = tmp_path / "other.safetensors"
    mx.save_safetensors(str(other), {"a": mx.array([7.0, 8.0]), "b": mx.arange(4) * 9})
    real_plan = api.plan_merge

    def plan_then_swap(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        os.replace(other, src)  # same size, other bytes: e.g. a download finishing meanwhile
        return plan

    monkeypatch.setattr(api, "plan_merge", plan_then_swap)
    out = tmp_path / "merged.safetensors"
    with pytest.raises(FileChangedError, match="source changed after its header was read"):
        api.merge(src, out)
    assert not out.exists()


@pytest.mark.parametrize("verb", ["merge", "split", "align"])
def test_an_empty_output_path_is_refused(tmp_path, monkeypatch, verb):
    # e.g. "mlxload merge src $OUT" with OUT unset: not a silent ./model.safetensors
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    monkeypatch.chdir(tmp_path)
    call = {"merge": merge, "split": split, "align": align}[verb]
    with pytest.raises(WriterError, match="the output path is empty"):
        call(src, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize("verb", ["merge", "split"])
def test_an_output_path_that_is_none_is_an_invalid_argument(tmp_path, verb):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    with pytest.raises(WriterArgumentError) as e:
        {"merge": merge, "split": split}[verb](src, None)
    assert isinstance(e.value, WriterError) and isinstance(e.value, ValueError)
    assert str(e.value) == "the output path is None, not a path; give a file or directory to write"


@pytest.mark.parametrize("verb", ["merge", "split", "align"])
def test_a_source_that_is_none_is_an_invalid_argument(tmp_path, verb):
    """It was a raw TypeError."""
    call = {"merge": merge, "split": split, "align": align}[verb]
    out = tmp_path / ("out.safetensors" if verb == "merge" else "out")
    with pytest.raises(WriterArgumentError) as e:
        call(None, out)
    assert str(e.value) == (
        "the source is None, not a path; give a checkpoint file, directory, index or hf://org/repo"
    )
    assert not out.exists()


def test_split_into_a_name_like_a_file_with_a_slash_is_a_directory(tmp_path):
    """ "x.safetensors/" says it is a directory, as merge reads it."""
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    out = tmp_path / "y.safetensors"
    split(src, f"{out}/")
    assert (out / "model.safetensors").is_file() or (out / "model.safetensors.index.json").is_file()


@pytest.mark.parametrize("verb", ["merge", "split"])
def test_an_unknown_on_conflict_is_an_invalid_argument(tmp_path, verb):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    out = tmp_path / "out" / "model.safetensors"
    with pytest.raises(WriterArgumentError) as e:
        {"merge": merge, "split": split}[verb](src, f"{out.parent}/", on_conflict="Last")
    assert isinstance(e.value, WriterError) and isinstance(e.value, ValueError)
    assert str(e.value) == "on_conflict must be one of 'error', 'first', 'last', got 'Last'"
    assert not out.parent.exists()


def test_split_into_a_name_like_a_file_is_refused_as_merge_and_align_do(tmp_path):
    """It would make a directory named x.safetensors (holding model.safetensors)."""
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    with pytest.raises(OutputNotADirectoryError) as e:
        split(src, tmp_path / "x.safetensors")
    assert str(e.value) == (
        f"{tmp_path / 'x.safetensors'}: names a file, but split writes a directory (its shards "
        "and an index); give a directory, or merge it into one file (mlxload merge)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    (tmp_path / "x.safetensors").mkdir()  # a directory that exists is one
    assert split(src, tmp_path / "x.safetensors").index == tmp_path / "x.safetensors" / (
        "model.safetensors.index.json"
    )


@pytest.mark.parametrize("renamed", [0, 1, 2, 3])  # of the 4 new shards, before the stop
@pytest.mark.parametrize("old_limit", ["20KiB", "40KiB"])  # the same shard names, or others
def test_a_forced_split_stopped_between_its_renames_never_loads_as_a_mix(
    tmp_path, monkeypatch, old_limit, renamed
):
    """The new shards were renamed over the old ones one by one, under the old index: a stop
    between two renames left a checkpoint that loaded, mixing the two models' weights."""
    import mlxload
    from mlxload.errors import MlxloadError

    old_src = write_sharded(tmp_path / "a", mixed_tensors(1, scale=50), 2)
    new_src = write_sharded(tmp_path / "b", mixed_tensors(2, scale=50), 2)
    out = tmp_path / "out"
    split(old_src, out, max_shard_size=old_limit)
    for shard in out.glob("model*.safetensors"):
        shard.chmod(0o600)
    real, renames = os.replace, []

    def stop_at_a_rename(src, dst, *args, **kwargs):
        if str(src).endswith(".mlxload-partial") and str(dst).endswith(".safetensors"):
            renames.append(dst)
            if len(renames) > renamed:
                raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", stop_at_a_rename)
    with pytest.raises(KeyboardInterrupt):
        split(new_src, out, max_shard_size="20KiB", force=True)
    monkeypatch.undo()
    try:
        ckpt = mlxload.load(out)
        loaded = {name: bytes(memoryview(ckpt[name])) for name in ckpt}
    except MlxloadError:
        loaded = None  # refused, naming what is missing: fine
    if loaded is not None:
        new = checkpoint_bytes(sorted(new_src.glob("*.safetensors")))
        old = checkpoint_bytes(sorted(old_src.glob("*.safetensors")))
        assert loaded in (old, new), sorted(loaded)
    result = split(new_src, out, max_shard_size="20KiB", force=True)
    assert checkpoint_bytes(result.outputs) == checkpoint_bytes(
        sorted(new_src.glob("*.safetensors"))
    )
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_forced_split_keeps_the_modes_of_the_files_it_replaces(tmp_path):
    out = tmp_path / "out"
    split(write_sharded(tmp_path / "a", mixed_tensors(1, scale=50), 2), out,
          max_shard_size="20KiB")  # fmt: skip
    for path in out.iterdir():
        path.chmod(0o600)
    result = split(write_sharded(tmp_path / "b", mixed_tensors(2, scale=50), 2), out,
                   max_shard_size="20KiB", force=True)  # fmt: skip
    assert {oct(p.stat().st_mode & 0o777) for p in [*result.outputs, result.index]} == {"0o600"}


@pytest.mark.parametrize("force", [False, True])
def test_a_rename_that_fails_keeps_the_finished_outputs_for_the_rerun(tmp_path, monkeypatch, force):
    """Once the old checkpoint is removed, a failed rename deleted the new, complete files too
    (leaving neither model) and said nothing was written; a fresh split left its renamed
    shards without journals, so the rerun was refused ('already exists; pass --force')."""
    import errno as errno_mod

    import mlxload

    out = tmp_path / "out"
    if force:
        split(write_sharded(tmp_path / "a", mixed_tensors(1, scale=50), 2), out,
              max_shard_size="20KiB")  # fmt: skip
    new_src = write_sharded(tmp_path / "b", mixed_tensors(2, scale=50), 2)
    real, renames = os.replace, []

    def second_rename_fails(src, dst, *args, **kwargs):
        if str(src).endswith(".mlxload-partial") and str(dst).endswith(".safetensors"):
            renames.append(dst)
            if len(renames) == 2:
                raise OSError(errno_mod.EIO, "Input/output error", str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(WriteFailedError) as e:
        split(new_src, out, max_shard_size="20KiB", force=force)
    monkeypatch.undo()
    assert str(e.value).startswith(f"putting {renames[1]} in place failed: an I/O error")
    assert "its complete copy is kept under a hidden work name beside it" in str(e.value)
    assert "run the same command again to finish" in e.value.__notes__[0]
    result = split(new_src, out, max_shard_size="20KiB", force=force)
    assert result.resumed_tensors == result.tensors  # nothing copied again
    assert checkpoint_bytes(result.outputs) == checkpoint_bytes(
        sorted(new_src.glob("*.safetensors"))
    )
    assert len(mlxload.load(out)) == len(mixed_tensors(2, scale=50))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_ctrl_c_while_the_finished_run_tidies_up_changes_nothing(tmp_path, monkeypatch):
    """It said 'run the same command again to resume', and the rerun was refused."""
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 2)
    out = tmp_path / "out"
    real, calls = execute_mod.remove_quietly, []

    def interrupted_once(*paths):
        done = (out / "model.safetensors.index.json").exists()
        if done and paths and all(p.name.endswith(".mlxload-journal") for p in paths):
            calls.append(paths)
            if len(calls) == 1:
                real(*paths[:1])
                raise KeyboardInterrupt
        return real(*paths)

    monkeypatch.setattr(execute_mod, "remove_quietly", interrupted_once)
    result = split(src, out, max_shard_size="20KiB")
    assert len(calls) == 2
    assert checkpoint_bytes(result.outputs) == checkpoint_bytes(sorted(src.glob("*.safetensors")))
    assert not [p.name for p in out.iterdir() if p.name.endswith(".mlxload-journal")]


def test_a_ctrl_c_while_the_finished_run_lets_go_of_its_locks_changes_nothing(
    tmp_path, monkeypatch
):
    """It said 'interrupted (run the same command again to resume)', left lock files, and the
    rerun was refused (the outputs existed)."""
    from pathlib import Path as P

    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 2)
    out = tmp_path / "out"
    real, hits = P.unlink, []

    def interrupted_once(self, *args, **kwargs):
        if self.name.endswith(".mlxload-lock") and not hits:
            hits.append(self)
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(P, "unlink", interrupted_once)
    result = split(src, out, max_shard_size="20KiB")
    monkeypatch.undo()
    assert hits and checkpoint_bytes(result.outputs) == checkpoint_bytes(
        sorted(src.glob("*.safetensors"))
    )
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
