"""Hundreds of shards: the open-file limit is raised when it allows, else a clear error.

Run in child processes: the limit is process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import mlx.core as mx
import pytest

resource = pytest.importorskip("resource")

CHILD = textwrap.dedent(
    """
    import resource, sys
    import mlxload
    from mlxload.writer import merge

    soft, hard = int(sys.argv[2]), int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        ckpt = mlxload.load(sys.argv[1])
        total = sum(int(v.item()) for v in ckpt.materialize().values())
        merge(sys.argv[1], sys.argv[1] + "-merged.safetensors")
        print("ok", total)
    except mlxload.MlxloadError as e:
        print(type(e).__name__, e)
    """
)


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards") / "ckpt"
    root.mkdir()
    for i in range(300):
        mx.save_safetensors(str(root / f"s{i:05d}.safetensors"), {f"t{i}": mx.array([i])})
    return root


def _run(path, soft: int, hard: int) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(soft), str(hard)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-500:]
    return proc.stdout.strip()


def test_a_low_soft_limit_is_raised_for_300_shards(many_shards, tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"hard limit {hard} is too low to raise the soft one here")
    assert _run(many_shards, 256, hard) == f"ok {sum(range(300))}"


def test_a_hard_limit_too_low_is_a_clear_error(many_shards):
    out = _run(many_shards, 128, 128)
    assert out.startswith("TooManyOpenFilesError ")
    assert "too many open files (300 shards need one each); raise the limit" in out
