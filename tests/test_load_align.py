"""``mlxload.load(..., align=...)``: rewrite misaligned checkpoints only when it helps."""

from __future__ import annotations

import warnings

import mlx.core as mx
import pytest

import mlxload
from mlxload import checkpoint


def _misaligned_dir(tmp_path):
    """An mx.save_safetensors file (no header padding) with a misaligned float32 tensor."""
    for k in range(1, 9):  # header length decides the data start: vary it until misaligned
        tensors = {"a": mx.arange(k, dtype=mx.int8), "b": mx.arange(10, dtype=mx.float32)}
        mx.save_safetensors(str(tmp_path / "model.safetensors"), tensors)
        if not mlxload.alignment_report(tmp_path).ready:
            return tensors
    raise AssertionError("could not produce a misaligned file")


def test_default_leaves_files_alone(tmp_path):
    _misaligned_dir(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    mlxload.load(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_auto_on_a_copying_backend_does_nothing_and_says_nothing(tmp_path, monkeypatch):
    """Aligning buys nothing where every tensor is copied anyway: a warning there was noise
    on every Linux run of a script written for both."""
    _misaligned_dir(tmp_path)
    monkeypatch.setattr(checkpoint, "zero_copy_supported", lambda: False)
    before = (tmp_path / "model.safetensors").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mlxload.load(tmp_path, align="auto")
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_auto_on_metal_where_it_may_not_rewrite_warns_once_with_the_command(tmp_path, monkeypatch):
    _misaligned_dir(tmp_path)
    monkeypatch.setattr(checkpoint, "zero_copy_supported", lambda: True)
    monkeypatch.setattr(checkpoint, "_warned", set())
    monkeypatch.setattr(checkpoint.os, "access", lambda path, mode: False)  # root writes all
    path = tmp_path / "model.safetensors"
    before = path.read_bytes()
    with pytest.warns(UserWarning) as caught:
        mlxload.load(path, align="auto", zero_copy=False)
    message = str(caught[0].message)
    assert message.startswith(f"{path}: ") and "% of bytes need a copy — run " in message
    assert message.endswith(
        f"`mlxload align {path} OUTDIR`; not rewriting in place because it is not writable"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mlxload.load(path, align="auto", zero_copy=False)  # second time: silent
    assert path.read_bytes() == before


def test_auto_on_metal_rewrites_once_and_tensors_are_unchanged(tmp_path, monkeypatch):
    tensors = _misaligned_dir(tmp_path)
    monkeypatch.setattr(checkpoint, "zero_copy_supported", lambda: True)
    ckpt = mlxload.load(tmp_path, align="auto", zero_copy=False)
    assert mlxload.alignment_report(tmp_path).ready
    for name, arr in tensors.items():
        assert mx.array_equal(ckpt[name], arr).item() and ckpt[name].dtype == arr.dtype
    mtime = (tmp_path / "model.safetensors").stat().st_mtime_ns
    mlxload.load(tmp_path, align="auto")
    assert (tmp_path / "model.safetensors").stat().st_mtime_ns == mtime


def test_true_rewrites_on_any_backend(tmp_path):
    tensors = _misaligned_dir(tmp_path)
    ckpt = mlxload.load(tmp_path, align=True)
    assert mlxload.alignment_report(tmp_path).ready
    assert all(mx.array_equal(ckpt[n], a).item() for n, a in tensors.items())


@pytest.mark.parametrize("through_a_link", [False, True])
def test_hf_cache_is_never_rewritten(tmp_path, through_a_link):
    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    _misaligned_dir(snap)
    before = (snap / "model.safetensors").read_bytes()
    given = snap
    if through_a_link:  # ln -s <snapshot> mymodel: still the cache
        given = tmp_path / "mymodel"
        given.symlink_to(snap)
    with pytest.raises(mlxload.CheckpointError, match=r"Hugging Face cache.*mlxload align"):
        mlxload.load(given, align=True)
    assert (snap / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("align", ["AUTO", "yes", 1, 0])
def test_align_takes_only_false_true_or_auto(tmp_path, align):
    mx.save_safetensors(str(tmp_path / "w.safetensors"), {"w": mx.ones(3)})
    before = (tmp_path / "w.safetensors").read_bytes()
    with pytest.raises(mlxload.InvalidArgumentError) as info:
        mlxload.load(tmp_path, align=align)
    assert str(info.value) == f"align must be False, True or 'auto', got {align!r}"
    assert isinstance(info.value, ValueError)
    assert (tmp_path / "w.safetensors").read_bytes() == before


@pytest.mark.parametrize("zero_copy", ["false", "no", 2])
def test_a_bad_zero_copy_is_refused_before_align_rewrites_anything(tmp_path, zero_copy):
    """zero_copy was checked only when the Checkpoint was built, after align=True had already
    rewritten the misaligned files in place."""
    _misaligned_dir(tmp_path)
    path = tmp_path / "model.safetensors"
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    with pytest.raises(
        mlxload.InvalidArgumentError,
        match=f"^zero_copy must be 'auto', True or False, got {zero_copy!r}$",
    ):
        mlxload.load(tmp_path, align=True, zero_copy=zero_copy)
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert not mlxload.alignment_report(tmp_path).ready


def test_the_align_command_in_the_cache_refusal_is_quoted(tmp_path):
    repo = tmp_path / "my models" / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    _misaligned_dir(snap)
    with pytest.raises(mlxload.CheckpointError) as e:
        mlxload.load(snap, align=True)
    assert f"`mlxload align '{snap}' OUT`" in str(e.value)
