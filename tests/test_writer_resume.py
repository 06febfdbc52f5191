"""Kill a merge/split mid-way and rerun it: it continues, and the result is byte-identical.
Also: peak memory stays bounded whatever the checkpoint size."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from safetensors.numpy import save_file
from writer_fixtures import checkpoint_bytes, mixed_tensors, tensor_bytes, u8_file, write_sharded

from mlxload.writer import OutputBusyError, OutputExistsError, align, merge, split
from mlxload.writer.execute import PAUSE_ENV, journal_path, temp_path
from mlxload.writer.lock import lock_outputs, lock_path


def _start_paused(args: list[str], pause_after: int) -> subprocess.Popen:
    env = {**os.environ, PAUSE_ENV: str(pause_after)}
    return subprocess.Popen(
        [sys.executable, "-m", "mlxload", *args, "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_journal(path, tensors: int, proc: subprocess.Popen, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            state = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            state = None
        if state and state["tensors_done"] >= tensors:
            return state
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"journal {path} never reached {tensors} tensors")


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def _paused_merge(tmp_path, out, pause_after: int):
    """A 3-shard source, its merge written uninterrupted as the reference, and a merge of it
    into ``out`` running in a child process that stops after ``pause_after`` tensors."""
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 3)
    reference = tmp_path / "ref.safetensors"
    merge(src, reference)
    return src, reference, _start_paused(["merge", str(src), str(out)], pause_after)


# The second name is 252 bytes: its work files' plain names (.NAME.mlxload-journal) would pass
# the 255-byte limit of file names, so they are cut and hashed, and must still be found again.
@pytest.mark.parametrize("name", ["m.safetensors", "m" * 240 + ".safetensors"], ids=len)
def test_killed_merge_resumes_from_journal_and_matches(tmp_path, name):
    out = tmp_path / "out" / name
    src, reference, proc = _paused_merge(tmp_path, out, pause_after=4)
    state = _wait_for_journal(journal_path(out), 4, proc)
    _kill(proc)
    assert state["tensors_done"] == 4 and state["resumes"] == 0
    assert not out.exists()  # never a partial file under the final name
    assert temp_path(out).exists()
    result = merge(src, out)
    assert result.resumed_tensors == 4
    assert result.resumed_bytes == state["bytes_done"] > 0
    assert result.copied_bytes == result.total_bytes - state["bytes_done"]
    assert out.read_bytes() == reference.read_bytes()
    assert not temp_path(out).exists() and not journal_path(out).exists()
    assert sorted(p.name for p in out.parent.iterdir()) == [name]  # no lock or work file left


def test_a_source_rewritten_with_its_times_put_back_is_not_resumed_from(tmp_path):
    """``rsync --inplace -t`` or ``cp -p`` over a source between the interrupted run and the
    rerun: same inode, size and mtime; only the ctime tells the new bytes from the old."""
    src = u8_file(tmp_path / "a.safetensors", 0)
    out = tmp_path / "out" / "m.safetensors"

    def stop_halfway(done, total, name):
        if name == "t1":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge(src, out, progress=stop_halfway)
    assert json.loads(journal_path(out).read_bytes())["tensors_done"] == 2
    st = src.stat()
    time.sleep(0.05)  # past the coarse clock's tick: the rewrite gets another ctime
    u8_file(src, 100)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (src.stat().st_ino, src.stat().st_size) == (st.st_ino, st.st_size)
    result = merge(src, out)
    assert result.resumed_tensors == 0 and result.copied_bytes == 4000
    assert tensor_bytes(out) == {f"t{i}": bytes([100 + i]) * 1000 for i in range(4)}


def _latin1_directory(tmp_path):
    """``modèle`` in Latin-1: a name that isn't UTF-8 (refused by macOS's APFS)."""
    path = tmp_path / os.fsdecode(b"mod\xe8le")
    try:
        path.mkdir()
    except OSError as e:
        pytest.skip(f"this filesystem refuses names that aren't UTF-8: {e}")
    return path


@pytest.mark.parametrize("verb", ["merge", "split", "align"])
def test_a_source_whose_path_is_not_utf8_is_written_and_resumed(tmp_path, verb):
    src = u8_file(_latin1_directory(tmp_path) / "a.safetensors", 0)
    call = {"merge": merge, "split": split, "align": align}[verb]
    out = tmp_path / "out" / ("a.safetensors" if verb == "align" else "model.safetensors")
    target = {"merge": out, "split": out.parent, "align": f"{out.parent}/"}[verb]

    def stop_halfway(done, total, name):
        if name == "t1":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call(src, target, progress=stop_halfway)
    assert json.loads(journal_path(out).read_bytes())["tensors_done"] == 2
    result = call(src, target)
    assert result.resumed_tensors == 2 and result.outputs == [out]
    assert tensor_bytes(out) == {f"t{i}": bytes([i]) * 1000 for i in range(4)}


def test_a_second_writer_of_the_same_output_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "out" / "m.safetensors"
    src, reference, proc = _paused_merge(tmp_path, out, pause_after=2)
    try:
        _wait_for_journal(journal_path(out), 2, proc)
        partial = temp_path(out).read_bytes()
        with pytest.raises(OutputBusyError, match=r"m\.safetensors is being written by another"):
            merge(src, out, force=True)
        assert temp_path(out).read_bytes() == partial  # the running writer's file untouched
        assert not out.exists()
    finally:
        _kill(proc)
    result = merge(src, out)  # the lock died with its process: this run resumes
    assert result.resumed_tensors == 2
    assert out.read_bytes() == reference.read_bytes()
    assert not lock_path(out).exists()


def test_rerun_from_another_directory_with_a_relative_path_resumes(tmp_path, monkeypatch):
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 3)
    out = tmp_path / "m.safetensors"
    monkeypatch.chdir(tmp_path)
    proc = _start_paused(["merge", "src", str(out)], pause_after=3)
    _wait_for_journal(journal_path(out), 3, proc)
    _kill(proc)
    monkeypatch.chdir(src)
    assert merge(".", out).resumed_tensors == 3


def test_journal_whose_counts_disagree_is_not_trusted(tmp_path):
    out = tmp_path / "m.safetensors"
    src, reference, proc = _paused_merge(tmp_path, out, pause_after=3)
    state = _wait_for_journal(journal_path(out), 3, proc)
    _kill(proc)
    state["tensors_done"] += 1  # one tensor more than the bytes cover
    journal_path(out).write_bytes(json.dumps(state).encode())
    result = merge(src, out)
    assert result.resumed_tensors == 0  # started over instead of skipping a tensor
    assert out.read_bytes() == reference.read_bytes()


def test_ctrl_c_between_the_two_progress_counters_keeps_the_journal_consistent(tmp_path):
    """A KeyboardInterrupt after ``tensors_done`` moved but before ``bytes_done`` did (a real
    Ctrl-C can land there) must not leave a journal claiming an unwritten tensor."""
    import inspect

    import mlxload.writer.execute as execute_mod

    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 3)
    reference = tmp_path / "ref.safetensors"
    merge(src, reference)
    out = tmp_path / "m.safetensors"
    code = execute_mod._Run._copy_tensors.__code__
    lines, first = inspect.getsourcelines(code)
    target = first + next(i for i, t in enumerate(lines) if "state.bytes_done +=" in t)
    hits = []

    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None
        if event == "line" and frame.f_lineno == target:
            hits.append(frame.f_lineno)
            if len(hits) == 3:
                raise KeyboardInterrupt
        return tracer

    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            merge(src, out)
    finally:
        sys.settrace(None)
    state = json.loads(journal_path(out).read_bytes())
    assert state["tensors_done"] == 3
    result = merge(src, out)
    assert result.resumed_tensors == 3 and result.resumed_bytes == state["bytes_done"]
    assert out.read_bytes() == reference.read_bytes()


def test_killed_split_resumes_across_finished_shards(tmp_path):
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 2)
    ref = split(src, tmp_path / "ref", max_shard_size="20KiB")
    assert len(ref.outputs) >= 3
    first_shard = len(__import__("mlxload").read_header(ref.outputs[0]).tensors)
    out = tmp_path / "out"
    pause = first_shard + 1  # one tensor into the second shard
    proc = _start_paused(["split", str(src), str(out), "--max-shard-size", "20KiB"], pause)
    second = out / ref.outputs[1].name
    _wait_for_journal(journal_path(second), 1, proc)
    _kill(proc)
    first = out / ref.outputs[0].name  # complete, but renamed only once every shard is
    assert temp_path(first).exists() and not first.exists()
    assert json.loads(journal_path(first).read_bytes())["complete"] is True
    assert not second.exists() and not (out / "model.safetensors.index.json").exists()
    result = split(src, out, max_shard_size="20KiB")  # no force needed: it is our own work
    assert result.resumed_tensors == pause
    for a, b in zip(ref.outputs, result.outputs, strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
    assert ref.index.read_bytes() == result.index.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in ref.outputs] + ["model.safetensors.index.json"]
    )
    with pytest.raises(OutputExistsError, match="already exist"):
        split(src, out, max_shard_size="20KiB")


_MEMORY_CHILD = textwrap.dedent(
    """
    import sys
    from mlxload.writer import copy as copy_mod, merge
    if sys.argv[3] == "buffer":
        copy_mod._disabled.update({"copy_file_range", "sendfile"})
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) pytest parent.
    before = hwm()
    merge(sys.argv[1], sys.argv[2])
    print(before, hwm())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("method", ["default", "buffer"])
def test_peak_memory_does_not_grow_with_checkpoint_size(tmp_path, method):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # 4 x 24 MiB
        block = rng.integers(0, 255, (24, 1 << 20), dtype=np.uint8).view(np.float32)
        save_file(
            {f"layer{i}.w": block, f"layer{i}.b": block[0, :7]}, str(src / f"s{i}.safetensors")
        )
    out = tmp_path / "m.safetensors"
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(src), str(out), method],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    before_kb, peak_kb = map(int, proc.stdout.split())
    assert out.stat().st_size > 96 << 20
    # (Growth only: the process before the merge is 90-380 MB, MLX's CUDA libraries included.)
    assert peak_kb - before_kb < 24 * 1024, (before_kb, peak_kb)  # under one shard's size


@pytest.mark.parametrize("field", ["tensors_done", "bytes_done", "resumes"])
def test_journal_with_a_negative_count_is_not_trusted(tmp_path, field):
    from mlxload.writer.journal import JournalState, load_journal, save_journal

    path = tmp_path / "j"
    save_journal(path, JournalState("d", tensors_done=2, bytes_done=64))
    assert load_journal(path, "d") == JournalState("d", tensors_done=2, bytes_done=64)
    state = json.loads(path.read_bytes())
    state[field] = -1
    path.write_bytes(json.dumps(state).encode())
    assert load_journal(path, "d") is None


def test_in_place_align_of_a_read_only_file_resumes_and_keeps_its_mode(tmp_path):
    """The mode is copied at the rename: a read-only temporary file would stop the resume."""
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 1)
    (shard,) = [p for p in src.iterdir() if p.suffix == ".safetensors"]
    shard.chmod(0o444)
    proc = _start_paused(["align", str(src)], pause_after=2)
    _wait_for_journal(journal_path(shard), 2, proc)
    _kill(proc)
    assert temp_path(shard).stat().st_mode & 0o200  # the partial file stays writable
    result = align(src)
    assert result.resumed_tensors == 2
    assert shard.stat().st_mode & 0o777 == 0o444


def test_killed_in_place_align_leaves_no_lock_files_after_the_rerun(tmp_path):
    # Files finished before the kill are unchanged on the rerun, so nothing else would ever
    # take (and so remove) the lock files the killed run left beside them.
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 3)
    shards = sorted(src.glob("*.safetensors"))
    first = len(__import__("mlxload").read_header(shards[0]).tensors)
    proc = _start_paused(["align", str(src)], pause_after=first + 1)
    _wait_for_journal(journal_path(shards[1]), 1, proc)
    _kill(proc)
    assert lock_path(shards[0]).exists()  # what the kill left behind
    result = align(src)
    assert result.unchanged == [shards[0]] and result.outputs
    assert sorted(p.name for p in src.iterdir() if p.name.startswith(".")) == []


def test_a_split_redone_with_other_settings_removes_the_abandoned_work(tmp_path):
    # Interrupted mid-way, then split again with another shard size: the first run's hidden
    # partial file (up to a shard's size) and journals could never be resumed any more.
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 2)
    ref = split(src, tmp_path / "ref", max_shard_size="20KiB")
    first_shard = len(__import__("mlxload").read_header(ref.outputs[0]).tensors)
    out = tmp_path / "out"
    proc = _start_paused(
        ["split", str(src), str(out), "--max-shard-size", "20KiB"], first_shard + 1
    )
    _wait_for_journal(journal_path(out / ref.outputs[1].name), 1, proc)
    _kill(proc)
    assert temp_path(out / ref.outputs[1].name).exists()
    busy = out / "model-00009-of-00009.safetensors"  # another run's live work: kept
    temp_path(busy).write_bytes(b"partial")
    with lock_outputs([busy]):
        result = split(src, out, max_shard_size="1MB")
    assert [p.name for p in result.outputs] == ["model.safetensors"]
    assert result.removed == []  # the killed run had put nothing in place
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == [temp_path(busy).name]


def test_a_split_stopped_part_way_does_not_load_as_a_model(tmp_path):
    """Shards get their final names only once all are written: a stopped split leaves no
    partial set that could be read as a model with tensors missing; rerunning finishes it."""
    import mlxload
    from mlxload.errors import CheckpointError

    src = write_sharded(tmp_path / "src", mixed_tensors(scale=30), 2)
    out = tmp_path / "out"

    def stop_in_the_second_shard(done, total, name):
        if temp_path(out / "model-00002-of-00002.safetensors").exists():
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        split(src, out, max_shard_size="40KiB", progress=stop_in_the_second_shard)
    assert temp_path(out / "model-00001-of-00002.safetensors").exists()
    assert not any(p.name.startswith("model") for p in out.iterdir())
    with pytest.raises(CheckpointError, match="was interrupted: run the same command again"):
        mlxload.load(out)
    split(src, out, max_shard_size="40KiB")
    assert checkpoint_bytes(sorted(out.glob("model-*.safetensors"))) == checkpoint_bytes(
        sorted(src.glob("model-*.safetensors"))
    )


def test_a_merge_stopped_while_copying_the_config_and_tokenizer_finishes_on_rerun(
    tmp_path, monkeypatch
):
    """The weights were in place and their journals gone, so the rerun refused ("already
    exists; pass --force") and the tokenizer was never copied."""
    from mlxload.writer import companions

    src = write_sharded(tmp_path / "src", mixed_tensors(scale=10), 2)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (src / name).write_text(json.dumps({"name": name}))
    out = tmp_path / "out"
    real, copied = companions.shutil.copyfile, []

    def stop_at_the_second(a, b):
        if copied:
            raise KeyboardInterrupt
        copied.append(real(a, b))

    monkeypatch.setattr(companions.shutil, "copyfile", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        merge(src, f"{out}/")
    monkeypatch.undo()
    assert (out / "model.safetensors").exists() and not (out / "tokenizer.json").exists()
    result = merge(src, f"{out}/")
    assert result.resumed_tensors == len(mixed_tensors(scale=10))
    assert sorted(p.name for p in result.companions) == ["tokenizer.json", "tokenizer_config.json"]
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_split_killed_while_dropping_its_journals_is_finished_by_the_rerun(tmp_path, monkeypatch):
    """Killed (here: stopped by SystemExit) after dropping some journals of a complete split:
    the rerun was refused ('already exists; pass --force')."""
    import mlxload.writer.execute as execute_mod

    src = write_sharded(tmp_path / "src", mixed_tensors(scale=50), 2)
    out = tmp_path / "out"
    real = execute_mod.remove_quietly

    def killed_after_the_first(*paths):
        journals = [p for p in paths if p.name.endswith(".mlxload-journal")]
        if len(journals) > 1 and (out / "model.safetensors.index.json").exists():
            real(journals[0])
            raise SystemExit(137)
        return real(*paths)

    monkeypatch.setattr(execute_mod, "remove_quietly", killed_after_the_first)
    with pytest.raises(SystemExit):
        split(src, out, max_shard_size="20KiB")
    monkeypatch.undo()
    left = [p for p in out.iterdir() if p.name.endswith(".mlxload-journal")]
    assert left and len(left) < 4
    result = split(src, out, max_shard_size="20KiB")
    assert result.resumed_tensors == result.tensors  # nothing copied again
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    with pytest.raises(OutputExistsError, match="already exist"):
        split(src, out, max_shard_size="20KiB")  # finished: a rerun needs --force again


def test_force_does_not_remove_files_another_run_is_writing(tmp_path):
    """merge --force into a directory whose split was still running deleted the shards and
    index that split held the locks of."""
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=10), 2)
    out = tmp_path / "out"
    split(src, out, max_shard_size="20KiB")
    shard = sorted(out.glob("model-*.safetensors"))[0]
    before = shard.read_bytes()
    with lock_outputs([shard]), pytest.raises(OutputBusyError, match="another mlxload process"):
        merge(src, f"{out}/", force=True)
    assert shard.read_bytes() == before
    assert merge(src, f"{out}/", force=True).removed  # free again: replaced as asked
