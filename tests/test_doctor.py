"""mlxload doctor: what it reports on this machine, and how a broken check is shown."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from mlxload import doctor_checks
from mlxload.backend import backend
from mlxload.cli import doctor


def test_reports_this_machine(capsys):
    assert doctor.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    assert set(checks) >= {
        "platform",
        "python",
        "mlx",
        "zero-copy",
        "metal kernels",
        "compute dtype",
        "hub",
    }
    assert mx.__version__ in checks["mlx"]["detail"]
    if not mx.metal.is_available():
        assert checks["metal kernels"]["detail"] == "skipped: no Metal"
        # the probe really ran: MLX's own refusal is quoted
        assert "Cannot import a CPU array without a copy" in checks["zero-copy"]["detail"]
    if backend() == "cpu":
        assert checks["compute dtype"]["detail"].startswith("float32")
    assert checks["read"]["status"] == "ok"


@pytest.mark.parametrize(
    ("version", "note"),
    [("0.32.2", False), ("0.31.3", True), ("0.28.0", True), ("1.0.0", False)],
)
def test_an_older_mlx_lm_is_named_with_what_it_lacks(monkeypatch, version, note):
    from mlxload.bench import environment

    monkeypatch.setattr(environment, "package_version", lambda name: version)
    check = doctor_checks.check_mlx_lm()
    assert check.status == "ok" and check.detail.startswith(f"mlx-lm {version}")
    assert ("mlx-lm 0.32 (Python >= 3.11) adds pipeline parallelism" in check.detail) == note


def test_failed_check_exits_nonzero_with_fix(monkeypatch, capsys):
    def check_broken():
        return doctor_checks.Check("thing", "fail", "it broke", "do the fix")

    def check_crashes():
        raise OSError("disk on fire")

    monkeypatch.setattr(doctor_checks, "CHECKS", (check_broken, check_crashes))
    assert doctor.main([]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] thing" in out and "-> do the fix" in out
    assert "[FAIL] crashes  OSError: disk on fire" in out
    assert "2 problem(s) found" in out


def test_hub_cache_not_writable(monkeypatch, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr("mlxload.hub.cache.default_cache_dir", lambda: locked)
    monkeypatch.setattr("mlxload.hub.offline.offline_mode", lambda: False)
    monkeypatch.setattr(doctor_checks.os, "access", lambda path, mode: False)
    check = doctor_checks.check_hub()
    assert (check.status, check.fix) == (
        "fail",
        "set HF_HOME (or HF_HUB_CACHE) to a writable directory",
    )
    assert f"{locked} is not writable" in check.detail


@pytest.mark.parametrize("offline", [False, True])
@pytest.mark.parametrize("under", ["", "hub"])
def test_hub_cache_that_is_a_file(monkeypatch, tmp_path, offline, under):
    afile = tmp_path / "afile"
    afile.touch()
    cache = afile / under if under else afile  # the cache itself, or a path under a file
    monkeypatch.setattr("mlxload.hub.cache.default_cache_dir", lambda: cache)
    monkeypatch.setattr("mlxload.hub.offline.offline_mode", lambda: offline)
    check = doctor_checks.check_hub()
    assert check.status == "fail"
    assert check.detail.endswith(f"; {afile} is a file, not a directory")
    assert check.fix == (
        f"set HF_HUB_CACHE (or HF_HOME) to a directory, or move the file {afile} away"
    )


def test_hub_cache_not_created_yet_is_fine(monkeypatch, tmp_path):
    monkeypatch.setattr("mlxload.hub.cache.default_cache_dir", lambda: tmp_path / "new" / "hub")
    monkeypatch.setattr("mlxload.hub.offline.offline_mode", lambda: False)
    check = doctor_checks.check_hub()
    assert check.status == "ok" and check.fix is None


def test_an_mlx_lm_that_does_not_import_fails_the_check(monkeypatch):
    import importlib

    real = importlib.import_module

    def broken(name, *args):
        if name == "mlx_lm.utils":
            raise ImportError("boom")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", broken)
    check = doctor_checks.check_mlx_lm()
    assert check.status == "fail"
    assert check.detail.endswith("is installed but does not import: ImportError: boom")
    assert check.fix == "reinstall it: pip install --force-reinstall 'mlxload[lm]'"


def test_unfinished_downloads_are_named_with_their_space(monkeypatch, tmp_path):
    from mlxload.hub.cache import RepoCache

    cache = tmp_path / "hub"
    for repo, name, size in [("org/a", "b1", 3000), ("org/a", "b2", 2000), ("other/b", "c", 7)]:
        partial = RepoCache(cache, repo).partial(name)
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"x" * size)
    done = RepoCache(cache, "org/done").blob("finished")
    done.parent.mkdir(parents=True)
    done.write_bytes(b"y" * 10)
    monkeypatch.setattr("mlxload.hub.cache.default_cache_dir", lambda: cache)
    monkeypatch.setattr("mlxload.hub.offline.offline_mode", lambda: False)
    check = doctor_checks.check_hub()
    assert check.status == "warn"
    assert check.detail.endswith("unfinished downloads hold space: org/a (4.9 KiB), other/b (7 B)")
    assert "`mlxload download org/a`" in check.fix
    assert f"{cache}/models--org--a/blobs/*.mlxload-partial" in check.fix


def test_a_cache_with_finished_downloads_only_is_ok(monkeypatch, tmp_path):
    from mlxload.hub.cache import RepoCache

    blob = RepoCache(tmp_path, "org/a").blob("finished")
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"y")
    monkeypatch.setattr("mlxload.hub.cache.default_cache_dir", lambda: tmp_path)
    monkeypatch.setattr("mlxload.hub.offline.offline_mode", lambda: False)
    assert doctor_checks.check_hub().status == "ok"
