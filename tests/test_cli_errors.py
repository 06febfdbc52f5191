"""One error handler for ``mlxload VERB`` and every verb's own ``main``; Ctrl-C; inspect flags."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import mlx.core as mx
import pytest
from signals import sigint_default
from writer_fixtures import mixed_tensors, write_sharded

from mlxload.cli import main as cli_main
from mlxload.errors import MlxloadError
from mlxload.writer import merge
from mlxload.writer.execute import PAUSE_ENV, journal_path, temp_path


def _entry_point(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlxload", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["ctrl-c", "kill"],
)
def test_ctrl_c_or_kill_during_merge_exits_and_the_rerun_resumes(tmp_path, signum, code, word):
    """SIGTERM (``kill``, a job scheduler's stop) killed the merge without a word; it now ends
    as Ctrl-C does."""
    src = write_sharded(tmp_path / "src", mixed_tensors(scale=20), 2)
    out = tmp_path / "m.safetensors"
    proc = _paused_writer(["merge", str(src), str(out), "--no-progress"], pause_after=3)
    deadline = time.monotonic() + 60
    while True:  # the pause hook flushes the journal, then sleeps
        assert proc.poll() is None, proc.communicate()
        try:
            if json.loads(journal_path(out).read_bytes())["tensors_done"] >= 3:
                break
        except (FileNotFoundError, ValueError):
            pass
        assert time.monotonic() < deadline, "the merge never reached its pause"
        time.sleep(0.05)
    proc.send_signal(signum)
    stdout, stderr = _communicate_or_dump_stacks(proc, timeout=60)
    assert proc.returncode == code, stderr
    assert stderr == (
        f"mlxload merge: {word} (run the same command again to resume)\n"
        f"  the partial output is kept as {temp_path(out)}; to start over instead, delete it "
        f"and {journal_path(out).name}\n"
    )
    assert stdout == ""
    assert not out.exists()  # nothing under the final name
    assert temp_path(out).exists() and journal_path(out).exists()
    result = merge(src, out)
    assert result.resumed_tensors == 3


def test_ctrl_c_during_a_split_names_every_output_it_keeps(tmp_path):
    """Outputs are put in place only once all are complete: the shards finished before the
    Ctrl-C wait under work names too, and starting over means deleting them as well."""
    from mlxload.shards import checkpoint_files

    src = write_sharded(tmp_path / "src", mixed_tensors(scale=2000), 1)
    out = tmp_path / "out"
    argv = ["split", str(src), str(out), "--no-progress", "--max-shard-size", "200KB"]
    proc = _paused_writer(argv, pause_after=6)
    deadline = time.monotonic() + 60
    while not sorted(out.glob(".*.mlxload-journal")) or len(list(out.glob(".*partial"))) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the split never reached its pause"
        time.sleep(0.05)
    time.sleep(0.5)  # (the pause hook flushes the journal, then sleeps)
    proc.send_signal(signal.SIGINT)
    _, stderr = _communicate_or_dump_stacks(proc, timeout=60)
    assert proc.returncode == 130, stderr
    staged = sorted(out.glob(".*.mlxload-partial"))
    assert len(staged) >= 2 and not list(out.glob("model*.safetensors"))
    current = stderr.split("kept as ")[1].split(";")[0]  # the output being written
    finished = [p for p in staged if str(p) != current]
    assert len(finished) == len(staged) - 1
    lines = stderr.splitlines()
    assert lines[0] == "mlxload split: interrupted (run the same command again to resume)"
    assert "the partial output is kept as" in lines[1]
    first = sorted(finished)[0].name
    assert (
        f"finished output(s) wait under hidden work names in {out} (" in lines[2]
        and first in lines[2]
        and lines[2].endswith(
            "for the rerun to put in place; to start over instead, delete those too, with "
            "their .mlxload-journal files"
        )
    ), stderr
    result = _entry_point(*argv)
    assert result.returncode == 0, result.stderr
    assert not list(out.glob(".*mlxload*"))
    assert len(checkpoint_files(out).files) > 2


def _paused_writer(argv: list[str], pause_after: int) -> subprocess.Popen:
    """``mlxload ARGV`` in a child that pauses (journal flushed) after ``pause_after`` tensors."""
    return subprocess.Popen(
        [sys.executable, "-m", "mlxload", *argv],
        env={**os.environ, PAUSE_ENV: str(pause_after), "PYTHONFAULTHANDLER": "1"},
        # A pytest started as a background job (``cmd &``) passes SIGINT on as ignored, and a
        # Python started so leaves it ignored (as a nohup'ed merge should): give the child
        # what an interactive terminal gives it.
        preexec_fn=sigint_default,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _communicate_or_dump_stacks(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """``proc.communicate``; a child that doesn't end in time is made to print where each of
    its threads is stuck (faulthandler on SIGABRT) and the test fails with that."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        stderr = proc.communicate(timeout=30)[1]
        pytest.fail(f"no exit {timeout} s after the signal; the child's threads:\n{stderr}")


_FAILING = {
    "inspect": ["{tmp}/missing.safetensors"],
    "merge": ["{tmp}/missing", "{tmp}/o.safetensors", "--no-progress"],
    "split": ["{tmp}/missing", "{tmp}/o", "--no-progress"],
    "align": ["{tmp}/missing", "--no-progress"],
    "download": ["org/model", "--offline", "--cache-dir", "{tmp}/hf"],  # not cached
    "bench": ["{tmp}"],  # no config.json
}


@pytest.mark.parametrize("verb", sorted(_FAILING))
def test_verb_main_and_entry_point_print_the_same_error_line(tmp_path, capsys, verb):
    argv = [a.format(tmp=tmp_path) for a in _FAILING[verb]]
    module = importlib.import_module(f"mlxload.cli.{verb}")
    assert module.main(argv) == 1
    own = capsys.readouterr().err
    assert cli_main([verb, *argv]) == 1
    top = capsys.readouterr().err
    assert own == top
    assert own.startswith(f"mlxload {verb}: error: ") and own.count("\n") == 1, own
    assert "Traceback" not in own and "[Errno" not in own


def test_entry_point_subprocess_prints_that_line_too(tmp_path, capsys):
    argv = [str(tmp_path / "missing"), str(tmp_path / "o.safetensors"), "--no-progress"]
    proc = _entry_point("merge", *argv)
    from mlxload.cli import merge as merge_verb

    assert merge_verb.main(argv) == 1
    assert proc.returncode == 1 and proc.stderr == capsys.readouterr().err
    assert proc.stderr.startswith("mlxload merge: error: ") and "no such file" in proc.stderr


def test_doctor_errors_go_through_the_same_handler(monkeypatch, capsys):
    import mlxload.doctor_checks
    from mlxload.cli import doctor

    def boom():
        raise MlxloadError("the checks could not run")

    monkeypatch.setattr(mlxload.doctor_checks, "run_checks", boom)
    assert doctor.main([]) == 1
    assert capsys.readouterr().err == "mlxload doctor: error: the checks could not run\n"

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(mlxload.doctor_checks, "run_checks", interrupted)
    assert cli_main(["doctor"]) == 130
    assert capsys.readouterr().err == "mlxload doctor: interrupted\n"  # nothing to resume


def test_inspect_rejects_a_negative_limit(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"w": mx.zeros((3,))})
    with pytest.raises(SystemExit) as info:
        cli_main(["inspect", str(path), "--limit", "-1"])
    assert info.value.code == 2
    assert "argument --limit: must be 0 or more, got -1" in capsys.readouterr().err
    assert cli_main(["inspect", str(path), "--limit", "0"]) == 0
    assert "... 1 more" in capsys.readouterr().out


def test_inspect_table_columns_line_up_with_short_names(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"w": mx.zeros((3,)), "ab": mx.zeros((2, 2))})
    assert cli_main(["inspect", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], lines[1:3]
    assert header.startswith("name  dtype")
    for row in rows:
        assert row.index("F32") == header.index("dtype"), (header, row)


@pytest.mark.parametrize("tensors", [2, 20000], ids=["fits-in-the-buffer", "many-writes"])
def test_closed_stdout_pipe_ends_quietly_with_141(tmp_path, tensors):
    path = tmp_path / "t.safetensors"
    mx.save_safetensors(str(path), {f"t{i:05d}_{'x' * 40}": mx.zeros((2,)) for i in range(tensors)})
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before mlxload writes a byte (as `| head -0`)
    proc = subprocess.run(
        [sys.executable, "-m", "mlxload", "inspect", str(path)],
        stdout=writer,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(writer)
    assert (proc.returncode, proc.stderr) == (141, "")


@pytest.mark.parametrize("json_out", [False, True], ids=["table", "json"])
def test_a_reader_that_goes_away_midway_ends_it_with_141(tmp_path, json_out):
    """As ``mlxload inspect --json | head -c 10``: the JSON used to be one large write, which
    the closed pipe cut short, and CPython dropped the BrokenPipeError of a short write: exit 0."""
    path = tmp_path / "t.safetensors"
    mx.save_safetensors(str(path), {f"t{i:05d}_{'x' * 40}": mx.zeros((2,)) for i in range(20000)})
    argv = [
        sys.executable,
        "-m",
        "mlxload",
        "inspect",
        str(path),
        *(["--json"] if json_out else []),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == b""
    proc.stderr.close()


def test_a_closed_stdout_is_no_traceback(tmp_path):
    """``mlxload merge A B >&-``: Python starts with sys.stdout None; the merge's work is done."""
    src = tmp_path / "a.safetensors"
    mx.save_safetensors(str(src), {"w": mx.ones((4,))})
    out = tmp_path / "b.safetensors"
    command = f"{shlex.quote(sys.executable)} -m mlxload merge {src} {out} >&-"
    proc = subprocess.run(command, shell=True, stderr=subprocess.PIPE, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert mx.array_equal(mx.load(str(out))["w"], mx.ones((4,))).item()


@pytest.mark.parametrize(
    "verb", [["inspect"], ["align"], ["merge", "OUT.safetensors"], ["split", "OUT"]]
)
def test_an_empty_source_path_is_refused_not_read_as_the_current_directory(
    tmp_path, capsys, monkeypatch, verb
):
    """``mlxload align "$MODEL"`` with MODEL unset rewrote every *.safetensors in the current
    directory in place."""
    monkeypatch.chdir(tmp_path)
    mx.save_safetensors(str(tmp_path / "here.safetensors"), {"w": mx.ones((3,))})
    before = (tmp_path / "here.safetensors").read_bytes()
    argv = [verb[0], "", *[str(tmp_path / a) for a in verb[1:]]]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert (
        err == f"mlxload {verb[0]}: error: the checkpoint path is empty; give a file or directory\n"
    )
    assert (tmp_path / "here.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here.safetensors"]


def test_a_file_it_may_not_read_is_named_with_the_reason_not_an_errno(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "locked.safetensors"
    mx.save_safetensors(str(path), {"w": mx.ones((2,))})
    real_open = os.open

    def refuse(p, flags, *args, **kwargs):  # tests run as root, whom chmod doesn't stop
        if os.fspath(p) == str(path):
            raise PermissionError(13, "Permission denied", os.fspath(p))
        return real_open(p, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert cli_main(["inspect", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"mlxload inspect: error: {path}: permission denied; check the permissions of the file "
        "and its directories\n"
    )
