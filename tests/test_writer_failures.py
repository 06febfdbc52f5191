"""Failures: no space, write errors, stale journals, copy fallbacks, changed sources."""

from __future__ import annotations

import collections
import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
from st_bytes import entry, write_raw
from writer_fixtures import (
    assert_aligned,
    checkpoint_bytes,
    mixed_tensors,
    tensor_bytes,
    u8_file,
    write_sharded,
)

from mlxload import free_space
from mlxload.errors import FileChangedError
from mlxload.writer import InsufficientSpaceError, WriteFailedError, merge, split
from mlxload.writer import execute as execute_mod
from mlxload.writer.copy import METHODS, copy_range
from mlxload.writer.execute import journal_path, temp_path
from mlxload.writer.journal import JournalState, save_journal
from mlxload.writer.plan import plan_merge
from mlxload.writer.sources import open_source

_Usage = collections.namedtuple("_Usage", "total used free")


def test_free_space_is_checked_before_writing(tmp_path, monkeypatch):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: _Usage(10**9, 10**9, 1000))
    monkeypatch.setattr(free_space, "_free_space_leaves_out_purgeable", lambda: False)
    out = tmp_path / "out" / "m.safetensors"
    with pytest.raises(
        InsufficientSpaceError, match=r"output needs 1\d\.\d KiB .* only 1000 B is free"
    ):
        merge(src, out)
    assert not (tmp_path / "out").exists()
    with pytest.raises(OSError) as info:
        split(src, tmp_path / "sp")
    assert info.value.errno == errno.ENOSPC


def test_a_shortfall_is_only_a_warning_on_macos(tmp_path, monkeypatch):
    # APFS reports purgeable space (snapshots, iCloud copies) as used and frees it on demand.
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: _Usage(10**9, 10**9, 1000))
    monkeypatch.setattr(free_space, "_free_space_leaves_out_purgeable", lambda: True)
    out = tmp_path / "m.safetensors"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merge(src, out)
    assert len(caught) == 1  # not once per check (it is checked again under the output lock)
    message = str(caught[0].message)
    assert (
        message.startswith(f"{tmp_path}: ") and "to write but the file system reports " in message
    )
    assert message.endswith("1000 B free; continuing, as macOS frees purgeable space (snapshots, "
                            "iCloud copies) as a disk fills")  # fmt: skip
    assert caught[0].filename == __file__  # pointed at the caller, not into mlxload
    assert_aligned(out)


def test_file_size_limit_gives_clear_error_and_no_final_file(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=200), 2)
    out = tmp_path / "m.safetensors"
    script = textwrap.dedent(
        f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
        from mlxload.writer import merge, WriteFailedError
        try:
            merge({str(src)!r}, {str(out)!r})
        except WriteFailedError as e:
            print("ERR", e.errno, e)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"ERR {errno.EFBIG} "), proc.stdout
    assert "the file size limit was reached" in proc.stdout
    assert "no partial output is left" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_enospc_during_copy_removes_temp_and_raises(tmp_path, monkeypatch):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    out = tmp_path / "m.safetensors"
    calls = []

    def full(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return copy_range(*args, **kwargs)

    monkeypatch.setattr(execute_mod, "copy_range", full)
    with pytest.raises(WriteFailedError, match="the disk is full") as info:
        merge(src, out)
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize("where", ["copy", "header", "journal"])
def test_a_write_of_no_bytes_is_a_full_disk_not_a_hang(tmp_path, monkeypatch, where):
    """A full disk may make pwrite return 0 instead of failing: the writers' loops added 0
    and tried again for ever (and the journal took a short write as done)."""
    import mlxload.fd_write as fd_write
    from mlxload.writer import copy as copy_mod

    monkeypatch.setattr(copy_mod, "_disabled", {"copy_file_range", "sendfile"})
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    real_pwrite, real_write = os.pwrite, os.write
    writes = []

    def stalls(fd, data, *offset):
        writes.append(len(data))
        is_header = where == "header" and offset == (0,)
        if (where == "copy" and offset and offset[0] > 0) or is_header or where == "journal":
            return 0
        return real_pwrite(fd, data, *offset) if offset else real_write(fd, data)

    # (fd_write.os is the os module: every pwrite, or every write, makes no progress)
    monkeypatch.setattr(fd_write.os, "write" if where == "journal" else "pwrite", stalls)
    with pytest.raises((WriteFailedError, OSError), match="full"):
        merge(src, tmp_path / "m.safetensors")
    assert len(writes) < 10  # it stopped, not looped
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("method", METHODS)
def test_every_copy_method_copies_exact_ranges(tmp_path, method):
    if method != "buffer" and not sys.platform.startswith("linux"):
        pytest.skip(f"{method} copies between regular files on Linux only")
    data = os.urandom(3 * (1 << 20) + 123)
    (tmp_path / "src").write_bytes(data)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    try:
        assert copy_range(src, dst, 5, 0, 1000, method=method) == method
        assert copy_range(src, dst, 1005, 1000, len(data) - 1005, method=method) == method
        with pytest.raises(FileChangedError, match="source ended at byte"):
            copy_range(src, dst, len(data) - 10, len(data), 20, method=method)
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "dst").read_bytes()[: len(data) - 5] == data[5:]


def test_copy_falls_back_when_copy_file_range_is_refused(tmp_path, monkeypatch):
    from mlxload.writer import copy as copy_mod

    def refuse(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(copy_mod.os, "copy_file_range", refuse, raising=False)
    monkeypatch.setattr(copy_mod, "_disabled", set())
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    out = tmp_path / "m.safetensors"
    merge(src, out)
    # (sendfile is refused too off Linux: it writes to sockets only there)
    assert "copy_file_range" in copy_mod._disabled and "buffer" not in copy_mod._disabled
    assert_aligned(out)


def test_data_under_a_journal_is_flushed_past_the_drive_cache_on_macos(tmp_path, monkeypatch):
    # macOS fsync leaves data in the drive's cache: a journal written after it could survive a
    # power cut that the data didn't, and a resume would then trust bytes that aren't there.
    import fcntl

    from mlxload.writer import flush

    calls = []
    monkeypatch.setattr(flush.sys, "platform", "darwin")
    monkeypatch.setattr(fcntl, "F_FULLFSYNC", 51, raising=False)
    monkeypatch.setattr(fcntl, "fcntl", lambda fd, cmd, *a: calls.append((fd, cmd)))
    with open(tmp_path / "data", "wb") as f:
        flush.data_sync(f.fileno())
        assert calls == [(f.fileno(), 51)]


def test_stale_journal_is_discarded(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    out = tmp_path / "m.safetensors"
    temp_path(out).write_bytes(b"garbage" * 10000)
    save_journal(journal_path(out), JournalState("0" * 64, tensors_done=5, bytes_done=100))
    result = merge(src, out)
    assert result.resumed_tensors == 0 and result.copied_bytes == result.total_bytes
    reference = tmp_path / "ref.safetensors"
    merge(src, reference)
    assert out.read_bytes() == reference.read_bytes()
    assert not temp_path(out).exists() and not journal_path(out).exists()


def test_journal_digest_changes_when_a_source_changes(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    before = plan_merge(open_source(src), tmp_path / "m.safetensors").outputs[0].digest()
    shard = src / "model-00001-of-00002.safetensors"
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = plan_merge(open_source(src), tmp_path / "m.safetensors").outputs[0].digest()
    assert before != after


def test_source_truncated_during_copy(tmp_path, monkeypatch):
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    plan = plan_merge(open_source(src), tmp_path / "m.safetensors")
    shard = src / "model-00002-of-00002.safetensors"
    run_class = execute_mod._Run
    real_open = run_class.open_sources

    def open_then_truncate(self):  # the sources are checked and open: now it shrinks
        real_open(self)
        with open(shard, "r+b") as f:
            f.truncate(shard.stat().st_size - 40)

    monkeypatch.setattr(run_class, "open_sources", open_then_truncate)
    with pytest.raises(FileChangedError) as e:
        execute_mod.execute(plan)
    assert str(e.value).startswith(f"{shard}: tensor '")
    assert "source ended at byte" in str(e.value)
    assert "truncated during the copy: restore it, then run the command again" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_source_rewritten_in_place_during_the_copy_is_refused(tmp_path):
    """Same inode, same size: the open descriptor reads the new bytes from then on, so the
    output would silently mix two versions of the file."""
    src = u8_file(tmp_path / "a.safetensors", 0)
    os.utime(src, ns=(10**18, 10**18))  # the rewrite surely gets another mtime
    inode = src.stat().st_ino

    def rewrite_halfway(done, total, name):
        if name == "t1":
            u8_file(src, 100)

    out = tmp_path / "out" / "m.safetensors"
    with pytest.raises(FileChangedError) as e:
        merge(src, out, progress=rewrite_halfway)
    assert src.stat().st_ino == inode
    assert str(e.value) == (
        f"{src}: source modified (written again, same size) while it was being copied, so "
        "m.safetensors could mix its old and new tensors and was not written — run the "
        "command again"
    )
    assert list((tmp_path / "out").iterdir()) == []  # no output, work file nor journal
    merge(src, out)  # the rerun copies the file as it is now
    assert tensor_bytes(out) == {f"t{i}": bytes([100 + i]) * 1000 for i in range(4)}


@pytest.mark.parametrize("change", ["chown", "utime", "xattr"])
def test_a_status_change_of_a_source_during_the_copy_is_no_change(tmp_path, change):
    """A chown -R, times set back or a sync client's extended attribute change only the
    status-change time: they failed a whole merge (and a split's finished shards)."""
    src = u8_file(tmp_path / "a.safetensors", 0)
    before = src.stat()

    def touch_halfway(done, total, name):
        if name != "t1":
            return
        if change == "chown":
            os.chown(src, before.st_uid, before.st_gid)
        elif change == "utime":
            os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))
        else:
            try:
                os.setxattr(src, "user.mlxload-test", b"1")
            except OSError:
                pytest.skip("no user extended attributes here")

    out = tmp_path / "m.safetensors"
    time.sleep(0.01)  # (a status change in the same clock tick as the write can't be told)
    merge(src, out, progress=touch_halfway)
    assert src.stat().st_ctime_ns != before.st_ctime_ns  # the status did change
    assert tensor_bytes(out) == {f"t{i}": bytes([i]) * 1000 for i in range(4)}


def test_the_free_space_margin_grows_with_the_output(tmp_path, monkeypatch):
    """A fixed 16 MiB margin refused a ~20 KB merge onto a disk with 5 MB free."""
    src = write_sharded(tmp_path / "src", mixed_tensors(), 2)
    free = {"bytes": 5 << 20}
    monkeypatch.setattr(shutil, "disk_usage", lambda p: _Usage(10**9, 10**9, free["bytes"]))
    monkeypatch.setattr(free_space, "_free_space_leaves_out_purgeable", lambda: False)
    merge(src, tmp_path / "small.safetensors")
    free["bytes"] = 1 << 20  # under the smallest margin, 1 MiB
    with pytest.raises(InsufficientSpaceError, match=r"\(\+1\.0 MiB margin\)") as e:
        merge(src, tmp_path / "other.safetensors")
    # the output's ~20 KiB over the margin: "1.0 MiB (+1.0 MiB margin)... 1.0 MiB" said nothing
    assert re.search(r" is free \(\d+\.\d KiB short\); free some space", str(e.value))
    from mlxload.writer.execute import _space_margin

    assert _space_margin(0) == 1 << 20
    assert _space_margin(64 << 20) == 3 << 20
    assert _space_margin(100 << 30) == 16 << 20


_SPLIT_CHILD = textwrap.dedent(
    """
    import os, resource, sys
    import mlxload
    from mlxload.writer import split

    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[3]), int(sys.argv[4])))
    try:
        result = split(sys.argv[1], sys.argv[2], max_shard_size=16400)
        print("ok", len(result.outputs))
    except mlxload.MlxloadError as e:
        print(type(e).__name__, e)
    """
)


@pytest.fixture(scope="module")
def four_hundred_tensors(tmp_path_factory):
    """400 4-byte tensors: 100 shards of 4 at a 16400-byte limit (16 KiB page + 16 bytes)."""
    header = {f"t{i:04d}": entry("F32", [1], 4 * i, 4 * i + 4) for i in range(400)}
    path = tmp_path_factory.mktemp("many") / "model.safetensors"
    return write_raw(path, header, bytes(range(200)) * 8)


def _split_child(src, out, soft: int, hard: int) -> str:
    args = [sys.executable, "-c", _SPLIT_CHILD, str(src), str(out), str(soft), str(hard)]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-500:]
    return proc.stdout.strip()


def test_a_split_into_more_shards_than_the_soft_limit_raises_it(four_hundred_tensors, tmp_path):
    """A lock is held on each output for the whole run: 100 shards and an index need 101."""
    resource = pytest.importorskip("resource")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"hard limit {hard} is too low to raise the soft one here")
    assert _split_child(four_hundred_tensors, tmp_path / "out", 64, hard) == "ok 100"
    assert checkpoint_bytes(sorted((tmp_path / "out").glob("*.safetensors"))) == tensor_bytes(
        four_hundred_tensors
    )


def test_a_split_the_hard_limit_cannot_hold_says_to_raise_it_before_writing(
    four_hundred_tensors, tmp_path
):
    pytest.importorskip("resource")
    out = _split_child(four_hundred_tensors, tmp_path / "out", 64, 64)
    assert re.fullmatch(
        r"TooManyOpenFilesError nothing was written: this split holds a lock on each of the "
        r"101 files it writes, and its 1 source file\(s\), open at once: 106 files, but the "
        r"limit on open files \(64, \d+ open already\) leaves room for \d+; raise it "
        r"\(`ulimit -n 1024`\) and run again",
        out,
    ), out
    assert not (tmp_path / "out").exists()
