"""A download killed mid-file resumes from the bytes already on disk (HTTP Range)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import mlx.core as mx
from hub_fixtures import checkpoint_files, serve
from hub_server import FakeRepo, Fault

from mlxload.hub import download

REPO = "acme/big-shard"
BIG = "model-00001-of-00002.safetensors"
CHILD = """
import sys
from mlxload.hub import download
download(sys.argv[1], workers=2, progress=False)
"""


def big_repo(tmp: Path) -> FakeRepo:
    files = checkpoint_files(tmp, shard_elems=(3_200_000, 1000))  # 12.8 MB + 4 KB
    return FakeRepo(REPO, files)


def test_killed_download_resumes_with_range(tmp_path, monkeypatch):
    repo = big_repo(tmp_path)
    size = len(repo.files[BIG])
    assert size > 10_000_000
    server, env = serve(monkeypatch, tmp_path, repo)
    try:
        server.add_fault(REPO, BIG, Fault("slow", rate=4_000_000))  # ~3 s for the whole shard
        partial = (
            tmp_path
            / "hf"
            / "hub"
            / "models--acme--big-shard"
            / "blobs"
            / f"{repo.sha256(BIG)}.mlxload-partial"
        )
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, REPO], env={**os.environ, **env}, cwd=tmp_path
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_size >= 2_000_000:
                break
            assert child.poll() is None, "the download finished or failed before it was killed"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        kept = partial.stat().st_size
        assert 2_000_000 <= kept < size
        assert not partial.with_name(repo.sha256(BIG)).exists()

        server.clear_log()
        path = download(REPO, progress=False)
        gets = server.gets(BIG)
        assert [r.range_start for r in gets] == [kept]  # resumed, not restarted
        assert (path / BIG).read_bytes() == repo.files[BIG]  # verified by sha256 on the way
        assert not partial.exists()
        loaded = mx.load(str(path / BIG))["layers.1.weight"]
        assert loaded.shape == (320_000, 10)
        assert mx.array_equal(loaded[-1], mx.arange(3_199_990, 3_200_000, dtype=mx.float32))
    finally:
        server.stop()
        huggingface_hub.close_session()


def test_a_write_of_no_bytes_fails_instead_of_looping(tmp_path):
    """A write that returns 0 (a full disk) would make the write loop spin forever; the
    bytes already hashed stay and the ones the disk refused are cut off."""
    import errno
    import hashlib

    import pytest

    from mlxload.hub.transfer import CHUNK, _Sink

    partial = tmp_path / "blob.mlxload-partial"
    partial.write_bytes(b"have")
    sink = _Sink(partial, hashlib.sha256(), lambda n: None, limit=2 * CHUNK)
    real = sink._out

    class FullDisk:
        def fileno(self) -> int:
            return real.fileno()

        def write(self, data: memoryview) -> int:  # a short write, then none: the disk is full
            return real.write(data[: len(data) // 2]) if len(data) == CHUNK else 0

        def close(self) -> None:
            real.close()

    sink._out = FullDisk()
    with pytest.raises(OSError, match="no byte written") as info:
        sink.add(bytes(CHUNK))
    assert info.value.errno == errno.ENOSPC
    sink._buf.clear()
    sink.close()
    assert partial.read_bytes() == b"have"
