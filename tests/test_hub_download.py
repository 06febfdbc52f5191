"""Downloads from a stand-in Hub on 127.0.0.1: selection, parallelism, layout, verification."""

from __future__ import annotations

import hashlib
import json
import os

import mlx.core as mx
import pytest
from hub_fixtures import REPO, hub, seconds_to_stop_after_ctrl_c  # noqa: F401  (fixture)
from hub_server import Fault
from signals import sigint_default

from mlxload.hub import (
    DownloadError,
    EntryNotFoundError,
    IntegrityError,
    download,
)
from mlxload.hub import transfer as transfer_mod

SHARDS = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
DEFAULT = {
    *SHARDS,
    "model.safetensors.index.json",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "merges.txt",
}


def snapshot_files(path):
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(transfer_mod, "BACKOFF_S", 0.01)


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_a_download_the_disk_has_no_room_for_is_refused_first(hub, monkeypatch, platform):  # noqa: F811
    import collections
    import shutil

    from mlxload import free_space

    server, _, _ = hub
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 100))
    monkeypatch.setattr(
        free_space, "_free_space_leaves_out_purgeable", lambda: platform == "darwin"
    )
    if platform == "linux":
        with pytest.raises(DownloadError, match=r" KiB to download but only 100 B free in "):
            download(f"hf://{REPO}", progress=False)
        assert not server.gets(".safetensors")
    else:  # macOS frees purgeable space as the disk fills: warn and go on
        with pytest.warns(UserWarning, match=" free; continuing, as macOS frees purgeable space"):
            path = download(f"hf://{REPO}", progress=False)
        assert snapshot_files(path) == DEFAULT


def test_after_a_full_disk_the_rerun_needs_room_for_the_rest_only(hub, monkeypatch):  # noqa: F811
    """The rerun was refused until there was room for every file whole again."""
    import collections
    import shutil

    from mlxload import free_space
    from mlxload.hub.cache import RepoCache, cache_root
    from mlxload.hub.remote import Remote
    from mlxload.hub.snapshot import _check_space

    _, repo, _ = hub
    cache = RepoCache(cache_root(None), REPO)
    files = [f for f in Remote(REPO).list_files(repo.commit) if f.path in SHARDS]
    half = sum(f.size for f in files) // 2
    (cache.storage / "blobs").mkdir(parents=True)
    cache.partial(files[0].blob_name).write_bytes(repo.files[files[0].path][: files[0].size - 10])
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, half + files[0].size))
    monkeypatch.setattr(free_space, "_free_space_leaves_out_purgeable", lambda: False)
    _check_space(cache, files)  # the rest fits: no error
    cache.partial(files[0].blob_name).unlink()
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, half))
    with pytest.raises(DownloadError, match="to download but only"):
        _check_space(cache, files)


def test_parallel_download_of_sharded_checkpoint(hub):  # noqa: F811
    server, repo, _ = hub
    for shard in SHARDS:  # slow enough that concurrent transfers must overlap
        server.add_fault(REPO, shard, Fault("slow", rate=40_000))
    path = download(f"hf://{REPO}", workers=3, progress=False)

    assert path.name == repo.commit
    assert path.parent.parent.name == "models--acme--tiny-3shard"
    assert snapshot_files(path) == DEFAULT  # no .bin, no README
    assert server.max_in_flight == 3
    for name in DEFAULT:
        f = path / name
        assert f.is_symlink()
        assert f.read_bytes() == repo.files[name]
        assert f.resolve().name == repo.etag(name)  # blobs/<sha256 or git sha1>
    storage = path.parent.parent
    assert (storage / "refs" / "main").read_text() == repo.commit
    assert not list((storage / "blobs").glob("*.mlxload-partial"))
    index = json.loads((path / "model.safetensors.index.json").read_text())
    for tensor, shard in index["weight_map"].items():  # what hub_fixtures wrote, by name
        i = int(tensor.split(".")[1])
        assert shard == SHARDS[i - 1]
        want = (
            mx.arange((3000, 2000, 1000)[i - 1], dtype=mx.float32).reshape(-1, 10) * i
            if tensor.endswith(".weight")
            else mx.full((10,), float(i), dtype=mx.float16)
        )
        got = mx.load(str(path / shard))[tensor]
        assert got.dtype == want.dtype and mx.array_equal(got, want).item()
    gets = [r.path.rsplit("/", 1)[1] for r in server.gets()]
    assert sorted(gets) == sorted(DEFAULT)  # each file fetched once, nothing else
    assert not any(r.method == "HEAD" for r in server.requests)


def test_one_worker_downloads_one_file_at_a_time(hub):  # noqa: F811
    server, _, _ = hub
    for shard in SHARDS:
        server.add_fault(REPO, shard, Fault("slow", rate=200_000))
    download(REPO, workers=1, progress=False)
    assert server.max_in_flight == 1


def test_second_download_fetches_nothing(hub):  # noqa: F811
    server, _, _ = hub
    first = download(REPO, progress=False)
    server.clear_log()
    assert download(REPO, progress=False) == first
    assert server.gets() == []
    assert [r.path for r in server.requests] == [f"/api/models/{REPO}/revision/main"]


def test_commit_revision_with_cached_listing_makes_no_api_call(hub):  # noqa: F811
    server, repo, _ = hub
    download(REPO, progress=False)
    server.clear_log()
    assert download(f"hf://{REPO}@{repo.commit}", progress=False).name == repo.commit
    assert server.requests == []


def test_allow_patterns_fetch_exactly_what_matches(hub):  # noqa: F811
    _, repo, _ = hub
    path = download(REPO, allow_patterns=["*.json"], progress=False)
    assert snapshot_files(path) == {
        "model.safetensors.index.json",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    path = download(REPO, allow_patterns="*.bin", progress=False)  # asked for explicitly
    assert (path / "pytorch_model.bin").read_bytes() == repo.files["pytorch_model.bin"]


def test_no_match_is_an_error(hub):  # noqa: F811
    with pytest.raises(EntryNotFoundError, match=r"no file matches \*\.gguf"):
        download(REPO, allow_patterns=["*.gguf"], progress=False)


def test_dropped_connection_resumes_at_the_byte_it_stopped(hub):  # noqa: F811
    server, repo, _ = hub
    shard = SHARDS[0]
    server.add_fault(REPO, shard, Fault("cut", after=5000))
    path = download(REPO, progress=False)
    assert (path / shard).read_bytes() == repo.files[shard]
    starts = [r.range_start for r in server.gets(shard)]
    assert starts == [None, 5000]  # not from 0, not from a chunk boundary


def test_retries_exhausted_keeps_partial_then_resumes(hub, monkeypatch):  # noqa: F811
    server, repo, _ = hub
    monkeypatch.setattr(transfer_mod, "PROGRESS", 4096)  # the first attempt's bytes count
    shard = SHARDS[0]
    server.add_fault(REPO, shard, Fault("cut", after=4096))
    server.add_fault(REPO, shard, Fault("cut", after=0, times=transfer_mod.RETRIES + 1))
    with pytest.raises(DownloadError) as e:
        download(REPO, progress=False)
    msg = str(e.value)
    assert shard in msg and "running again resumes" in msg
    assert "4096 of 12193 bytes kept" in msg
    blobs = next((server_home(hub) / "hub").glob("models--*/blobs"))
    partial = blobs / f"{repo.sha256(shard)}.mlxload-partial"
    assert partial.stat().st_size == 4096
    assert not (blobs / repo.sha256(shard)).exists()

    server.clear_log()
    path = download(REPO, progress=False)
    assert (path / shard).read_bytes() == repo.files[shard]
    assert [r.range_start for r in server.gets(shard)] == [4096]
    assert not partial.exists()


@pytest.mark.parametrize("fault", ["drip", "trickle"])
def test_a_link_that_brings_a_few_bytes_per_attempt_runs_out_of_retries(
    hub,  # noqa: F811
    monkeypatch,
    fault,
):
    """Any byte used to reset the retries: a link cut after 10 bytes took 1,220 GETs for a
    12 KB shard, and 1 byte/s never tripped the read timeout. An attempt must now bring 64 KiB
    (or the rest of the file), at 1 KiB/s or more over each window."""
    server, _, _ = hub
    shard = SHARDS[0]
    monkeypatch.setattr(transfer_mod, "SLOW_WINDOW_S", 0.3)
    if fault == "drip":
        server.add_fault(REPO, shard, Fault("cut", after=10, times=-1))
    else:
        server.add_fault(REPO, shard, Fault("slow", rate=100.0, after=64, times=-1))
    with pytest.raises(DownloadError, match="gave up after 6 attempts in a row without progress"):
        download(REPO, progress=False, workers=1)
    assert len(server.gets(shard)) == transfer_mod.RETRIES + 1


def server_home(hub_tuple):
    from huggingface_hub import constants

    del hub_tuple
    from pathlib import Path

    return Path(constants.HF_HOME)


def test_corrupted_bytes_raise_integrity_error_and_leave_nothing(hub):  # noqa: F811
    server, repo, _ = hub
    shard = SHARDS[1]
    server.add_fault(REPO, shard, Fault("corrupt"))
    with pytest.raises(IntegrityError) as e:
        download(REPO, progress=False)
    err = e.value
    expected = repo.sha256(shard)
    bad = bytearray(repo.files[shard])
    bad[len(bad) // 2] ^= 0xFF
    actual = hashlib.sha256(bad).hexdigest()
    assert (err.filename, err.expected, err.actual) == (shard, expected, actual)
    assert f"{shard}: sha256 mismatch: expected {expected}, got {actual}" in str(err)
    blobs = next((server_home(hub) / "hub").glob("models--*/blobs"))
    assert not (blobs / expected).exists()
    assert not (blobs / f"{expected}.mlxload-partial").exists()
    snap = next((server_home(hub) / "hub").glob("models--*/snapshots/*"))
    assert not (snap / shard).exists()

    path = download(REPO, progress=False)  # the fault was one-shot: a clean retry works
    assert (path / shard).read_bytes() == repo.files[shard]


def test_corrupted_small_file_fails_git_sha1_check(hub):  # noqa: F811
    server, repo, _ = hub
    server.add_fault(REPO, "config.json", Fault("corrupt"))
    with pytest.raises(IntegrityError, match=r"config\.json: git sha1 mismatch") as e:
        download(REPO, progress=False)
    assert e.value.expected == repo.etag("config.json")


def test_huggingface_hub_reads_our_cache_offline(hub):  # noqa: F811
    import huggingface_hub

    server, _, _ = hub
    path = download(REPO, progress=False)
    server.clear_log()
    got = huggingface_hub.hf_hub_download(REPO, "config.json", local_files_only=True)
    assert got == str(path / "config.json")
    snap = huggingface_hub.snapshot_download(
        REPO, allow_patterns=["*.safetensors", "*.json"], local_files_only=True
    )
    assert snap == str(path)
    report = huggingface_hub.scan_cache_dir()
    assert report.warnings == []
    (cached,) = report.repos
    assert cached.repo_id == REPO and cached.nb_files == len(DEFAULT)
    assert server.requests == []


def test_progress_bar_shows_and_env_disables_it(hub, capsys, monkeypatch):  # noqa: F811
    download(REPO, progress=True, allow_patterns=["*.json"])
    err = capsys.readouterr().err
    assert "hf://acme/tiny-3shard" in err and "B/s" in err
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    download(REPO, allow_patterns=["*.safetensors"])
    assert capsys.readouterr().err == ""


def test_mlxload_load_opens_hub_spec(hub):  # noqa: F811
    import mlxload

    server, _, _ = hub
    ckpt = mlxload.load(f"hf://{REPO}", progress=False)
    assert mx.array_equal(ckpt["layers.3.bias"], mx.full((10,), 3.0, dtype=mx.float16))
    server.clear_log()
    ckpt = mlxload.load(REPO, local_files_only=True)  # bare org/repo, from the cache
    assert mx.array_equal(
        ckpt["layers.2.weight"], mx.arange(2000, dtype=mx.float32).reshape(-1, 10) * 2
    )
    assert server.requests == []


def test_a_temporary_link_left_by_a_killed_run_is_swept(hub):  # noqa: F811
    """A run killed between creating a snapshot link's temporary and renaming it left
    ``.config.json.<hex>.tmp`` in the snapshot; the next run removes it."""
    _, repo, _ = hub
    snapshot = download(REPO, progress=False)
    stale = snapshot / ".config.json.0c4b1180.tmp"
    stale.symlink_to("config.json")
    (snapshot / "config.json").unlink()  # that run never renamed its link into place
    assert download(REPO, progress=False) == snapshot
    assert (snapshot / "config.json").read_bytes() == repo.files["config.json"]
    assert not stale.exists() and not stale.is_symlink()


@pytest.mark.parametrize("then", ["fails", "recovers"])
def test_a_short_write_never_leaves_unhashed_bytes(hub, monkeypatch, then):  # noqa: F811
    """A disk filling up makes write() return fewer bytes than asked; that count was ignored,
    so the hash covered bytes that never reached the disk, and the short file got its final
    blob name. Every byte is now written or the file is cut back to what was hashed."""
    import builtins

    _, repo, _ = hub
    shard = SHARDS[0]
    from mlxload.hub.cache import PARTIAL_SUFFIX

    calls = {"n": 0}
    real_open = builtins.open

    class ShortOnce:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            calls["n"] += 1
            if calls["n"] == 1:
                return self._f.write(bytes(data[: len(data) // 2]))  # a short write
            if then == "fails" and calls["n"] == 2:
                raise OSError(28, "No space left on device")
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

    def opener(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return ShortOnce(f) if str(path).endswith(PARTIAL_SUFFIX) and shard in _blob_names(
            repo, path) else f  # fmt: skip

    monkeypatch.setattr(transfer_mod, "CHUNK", 4096)  # several writes per shard
    monkeypatch.setattr(transfer_mod, "open", opener, raising=False)
    if then == "fails":
        with pytest.raises(DownloadError, match=f"{shard}: cannot write"):
            download(f"hf://{REPO}", progress=False, workers=1)
        monkeypatch.delattr(transfer_mod, "open")
    path = download(f"hf://{REPO}", progress=False, workers=1)
    assert calls["n"] >= 2  # the short write happened
    assert (path / shard).read_bytes() == repo.files[shard]


def _blob_names(repo, path) -> list[str]:
    """The repo files whose blob ``path`` (``<sha256>.mlxload-partial``) is."""
    digest = str(path).rsplit("/", 1)[-1].split(".")[0]
    return [n for n, data in repo.files.items() if hashlib.sha256(data).hexdigest() == digest]


@pytest.mark.parametrize("kind", ["stall", "status", "slow"])
def test_a_tree_listing_that_stalls_or_says_retry_much_later_ends_in_an_error(
    hub,  # noqa: F811
    monkeypatch,
    kind,
):
    """huggingface_hub's list_repo_tree has no timeout (a stalled server hung every download
    for ever) and sleeps as long as Retry-After says (10**9 s); each page now gets the read
    timeout and capped retries of the file downloads."""
    import time

    from hub_server import TREE

    server, _, _ = hub
    monkeypatch.setattr(transfer_mod, "READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(transfer_mod, "SLOW_WINDOW_S", 0.3)  # "slow": 20 bytes a second
    monkeypatch.setattr(transfer_mod, "BACKOFF_S", 0.01)
    rate = 20.0 if kind == "slow" else 60.0
    server.add_fault(REPO, TREE, Fault(kind, rate=rate, after=2, status=503, times=-1))
    start = time.monotonic()
    with pytest.raises(DownloadError):
        download(f"hf://{REPO}", progress=False)
    assert time.monotonic() - start < 30
    assert not server.gets()


def test_waiting_for_another_process_download_is_reported(hub, monkeypatch, capfd):  # noqa: F811
    """A peer stuck holding a file's lock (SIGSTOP'ed, say) made a second download wait
    without a word; it now says what it waits for, every LOCK_NOTICE_S."""
    import threading

    import filelock

    from mlxload.hub import snapshot as snapshot_mod
    from mlxload.hub.cache import RepoCache, cache_root

    monkeypatch.setattr(snapshot_mod, "LOCK_NOTICE_S", 0.5)

    _, repo, _ = hub
    cache = RepoCache(cache_root(None), REPO)
    shard = SHARDS[0]
    lock_path = cache.lock(repo.sha256(shard))
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    peer = filelock.FileLock(str(lock_path), thread_local=False)
    peer.acquire()
    release = threading.Timer(1.6, peer.release)
    release.start()
    try:
        path = download(f"hf://{REPO}", progress=False)
    finally:
        release.join()
    assert (path / shard).read_bytes() == repo.files[shard]
    err = capfd.readouterr().err
    assert f"s for another process downloading {shard} (lock {lock_path}); it goes on" in err


def test_a_cache_that_cant_be_written_says_what_to_do(hub, monkeypatch):  # noqa: F811
    """A read-only cache missing a file ended in a bare "[Errno 30] ... <sha>.lock". (A real
    read-only mount needs privileges tests don't have, and root ignores file modes: the
    failure is raised where the filesystem would raise it.)"""
    import errno
    import pathlib

    real_touch = pathlib.Path.touch

    def read_only(self, *args, **kwargs):
        if self.suffix == ".lock":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_touch(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "touch", read_only)
    with pytest.raises(DownloadError) as e:
        download(f"hf://{REPO}", progress=False, workers=1)
    assert "is not in the cache and the cache " in str(e.value)
    assert "can't be written (Read-only file system: " in str(e.value)
    assert (
        "set HF_HUB_CACHE (or --cache-dir) to a writable directory, or use only what is cached"
        in str(e.value)
    )


def test_a_cache_that_cant_hold_a_new_snapshot_says_what_to_do(hub, monkeypatch):  # noqa: F811
    """A branch that moved, with a read-only cache: 'OSError: [Errno 30] ... snapshots/...'."""
    import errno
    import pathlib

    _, repo, _ = hub
    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.name == repo.commit:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    with pytest.raises(DownloadError) as e:
        download(f"hf://{REPO}", progress=False, workers=1)
    assert str(e.value).startswith(
        f"hf://{REPO}: commit {repo.commit[:12]} (main) is not in the cache and the cache "
    )
    assert "can't be written (Read-only file system: " in str(e.value)


def test_ctrl_c_does_not_wait_for_a_server_silent_before_its_headers(hub):  # noqa: F811
    """No connection can be shut before a response exists, so those transfers are left to end
    on their own (daemon threads): the download stops a grace period after Ctrl-C, not when
    the 30 s read timeout ends the requests (here the server says nothing for 12 s)."""
    server, _, _ = hub
    for shard in SHARDS:
        server.add_fault(REPO, shard, Fault("slow", rate=1e9, delay=12, times=-1))
    took = seconds_to_stop_after_ctrl_c(lambda: download(REPO, progress=False, workers=3))
    assert took < 5, f"Ctrl-C took {took:.1f} s to stop the download"
    assert _shard_requests(server) == 3  # all three were waiting on the server


def test_a_retry_right_after_ctrl_c_says_it_waits_for_this_process_and_gets_it_right(
    hub,  # noqa: F811
    monkeypatch,
    capsys,
):
    """A transfer left waiting for the server holds its blob's lock until it ends: a retry in
    the same process waits for it, and said it waited for "another process"."""
    from mlxload.hub import snapshot

    server, repo, _ = hub
    monkeypatch.setattr(snapshot, "LOCK_NOTICE_S", 0.5)
    for shard in SHARDS:  # the first request of each is answered 5 s late; the retry's not
        server.add_fault(REPO, shard, Fault("slow", rate=1e9, delay=5, times=1))
    seconds_to_stop_after_ctrl_c(lambda: download(REPO, progress=False, workers=3))
    path = download(REPO, progress=False, workers=3)  # ~3 s in: ~2 s of waiting for locks
    assert (
        " s for an interrupted download in this process (still waiting for the server's first "
        "answer; at most 30 s) downloading model-0000"
    ) in capsys.readouterr().err
    for shard in SHARDS:
        assert (path / shard).read_bytes() == repo.files[shard]


def _shard_requests(server) -> int:
    return sum(r.method == "GET" and r.path.endswith(tuple(SHARDS)) for r in list(server.requests))


def test_a_ctrl_c_d_cli_download_exits_at_once_though_the_server_is_silent(hub, tmp_path):  # noqa: F811
    """The process too: the interpreter joins no thread still waiting on the server."""
    import signal
    import subprocess
    import sys
    import time

    server, _, env = hub
    for shard in SHARDS:
        server.add_fault(REPO, shard, Fault("slow", rate=1e9, delay=12, times=-1))
    cmd = [sys.executable, "-m", "mlxload", "download", REPO, "--workers", "3"]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default
    )
    deadline = time.monotonic() + 30
    while _shard_requests(server) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _shard_requests(server) == 3, "the transfers never started"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 130, stderr
    assert took < 5, f"the process took {took:.1f} s to exit after Ctrl-C"


def test_ctrl_c_stops_transfers_waiting_on_a_stalled_server_at_once(hub):  # noqa: F811
    """Each worker waited out its read (up to the 30 s timeout) before it saw the stop; the
    stop now shuts their connections. Here the server sends 16 bytes, then nothing for 16 s."""
    server, _, _ = hub
    for shard in SHARDS:
        server.add_fault(REPO, shard, Fault("slow", rate=1.0, after=16, times=-1))
    took = seconds_to_stop_after_ctrl_c(lambda: download(REPO, progress=False, workers=3))
    assert took < 5, f"Ctrl-C took {took:.1f} s to stop the download"
    assert server.max_in_flight == 3  # all three were waiting on the server
    blobs = server_home(hub) / "hub" / "models--acme--tiny-3shard" / "blobs"
    kept = sorted(p.stat().st_size for p in blobs.glob("*.mlxload-partial"))
    assert kept == [16, 16, 16]  # what arrived is kept: the next run resumes there


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_commit_lookup_is_asked_again(hub, monkeypatch, status):  # noqa: F811
    """One 429/503 from the commit lookup failed the download at once (HfApi.model_info)."""
    from hub_server import REVISION

    server, repo, _ = hub
    monkeypatch.setattr(transfer_mod, "BACKOFF_S", 0.01)
    server.add_fault(REPO, REVISION, Fault("status", status=status))
    assert download(REPO, progress=False).name == repo.commit
    assert len([r for r in server.requests if "/revision/" in r.path]) == 2


@pytest.mark.parametrize(
    ("where", "body", "words"),
    [
        ("@revision", "<html>Sign in to the Wi-Fi</html>", "the answer is not the Hub API's JSON"),
        ("@revision", '{"id": "x"}', "the Hub did not return a commit hash (got None)"),
        ("@tree", '{"error": "nope"}', "the answer is not the Hub API's JSON"),
        ("@tree", '[{"type": "file", "path": "a"}]', "a tree listing entry without a valid path"),
        ("@tree", '[{"type": "file", "path": "a", "size": -5}]', "without a valid path and size"),
    ],
)
def test_an_answer_that_is_not_the_hub_api_is_said_so(hub, where, body, words):  # noqa: F811
    """A captive portal's page read as 'JSONDecodeError: Expecting value', an entry without
    a size as "KeyError: 'size'", a negative size as a missing .mlxload-partial file."""
    from mlxload.hub import HubError

    server, _, _ = hub
    server.add_fault(REPO, where, Fault("body", location=body, times=-1))
    with pytest.raises(HubError) as e:
        download(REPO, progress=False)
    assert words in str(e.value)
    assert "HF_ENDPOINT" in str(e.value)


def test_a_body_sent_compressed_is_refused_not_kept(hub, monkeypatch):  # noqa: F811
    """Compressed bytes were kept as the file's prefix: six attempts later 'running again
    resumes' promised a resume that could only end in a hash mismatch."""
    server, repo, _ = hub
    shard = SHARDS[0]
    server.add_fault(REPO, shard, Fault("gzip", times=-1))
    with pytest.raises(DownloadError) as e:
        download(REPO, progress=False, workers=1)
    assert f"{shard}: the server sent it encoded (gzip) though asked for the plain bytes" in str(
        e.value
    )
    assert len(server.gets(shard)) == 1  # no retry: asking again gets the same
    from mlxload.hub.cache import RepoCache, cache_root

    cache = RepoCache(cache_root(None), REPO)
    assert not cache.partial(repo.sha256(shard)).exists()  # (another shard's may: stopped)
    assert not cache.blob(repo.sha256(shard)).exists()


def test_by_default_bars_are_drawn_on_a_terminal_only(monkeypatch):
    """A log file or a pipe got every redraw of every bar ('^Mhf://...: 0%|...')."""
    import io

    from mlxload.hub.progress import progress_enabled

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr("huggingface_hub.utils.are_progress_bars_disabled", lambda: False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress_enabled(None) is False
    assert progress_enabled(True) is True  # asked for: drawn anyway
    monkeypatch.setattr("sys.stderr", Tty())
    assert progress_enabled(None) is True
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    assert progress_enabled(None) is False


def test_a_rate_limited_commit_lookup_says_nothing_of_kept_files(hub, monkeypatch):  # noqa: F811
    """'(finished files are kept, interrupted ones resume)' when no transfer had started."""
    from hub_server import REVISION

    server, _, _ = hub
    monkeypatch.setattr(transfer_mod, "BACKOFF_S", 0.01)
    server.add_fault(REPO, REVISION, Fault("status", status=429, times=-1))
    with pytest.raises(DownloadError) as e:
        download(REPO, progress=False)
    assert str(e.value) == f"hf://{REPO}@main: the Hub answered HTTP 429; try again later"


def test_load_model_of_a_hub_repo_looks_its_branch_up_once(tmp_path, monkeypatch):
    """The config/tokenizer check first, then the weights: from the one commit resolved."""
    import huggingface_hub
    from hub_fixtures import serve
    from hub_server import FakeRepo
    from model_fixtures import tiny_checkpoint

    from mlxload.model import load_model

    model = tiny_checkpoint(tmp_path / "cache")
    files = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    server, _ = serve(monkeypatch, tmp_path, FakeRepo("me/ok", files))
    try:
        loaded, tokenizer, _ = load_model("hf://me/ok")
        assert loaded.load_report.bytes_read > 0
        lookups = [r for r in server.requests if "/revision/" in r.path]
        listings = [r for r in server.requests if "/tree/" in r.path]
        assert len(lookups) == 1 and len(listings) == 1
        assert server.gets(".safetensors") and tokenizer is not None
    finally:
        server.stop()
        huggingface_hub.close_session()


def test_load_model_checks_a_hub_repos_tokenizer_before_its_weights(tmp_path, monkeypatch):
    """A repo without tokenizer files failed only after its weights were downloaded, and was
    told to copy them into the Hugging Face cache."""
    import huggingface_hub
    from hub_fixtures import serve
    from hub_server import FakeRepo
    from model_fixtures import tiny_checkpoint

    from mlxload.model import load_model
    from mlxload.model_recipe import ModelLoadError

    model = tiny_checkpoint(tmp_path / "cache")
    files = {
        p.name: p.read_bytes()
        for p in model.iterdir()
        if p.is_file() and not p.name.startswith("tokenizer")
    }
    server, _ = serve(monkeypatch, tmp_path, FakeRepo("me/notok", files))
    try:
        with pytest.raises(ModelLoadError, match="the repository has no tokenizer files"):
            load_model("hf://me/notok")
        assert not server.gets(".safetensors")  # no weight was fetched
    finally:
        server.stop()
        huggingface_hub.close_session()
