"""hf:// spec parsing and the local-path vs Hub decision of mlxload.hub.resolve."""

from __future__ import annotations

import pytest
from hub_fixtures import REPO, hub  # noqa: F401  (fixture)

import mlxload
from mlxload.errors import MlxloadError
from mlxload.hub import HubSpec, HubSpecError, is_hub_spec, parse_spec, resolve


@pytest.mark.parametrize(
    ("spec", "repo_id", "revision"),
    [
        ("hf://mlx-community/Qwen3-0.6B-4bit", "mlx-community/Qwen3-0.6B-4bit", None),
        ("hf://org/repo@v1.2", "org/repo", "v1.2"),
        ("hf://org/repo@refs/pr/3", "org/repo", "refs/pr/3"),
        ("org/repo@" + "a" * 40, "org/repo", "a" * 40),
        ("org/repo/", "org/repo", None),
        ("hf://gpt2", "gpt2", None),
    ],
)
def test_parse_valid(spec, repo_id, revision):
    assert parse_spec(spec) == HubSpec(repo_id, revision)


def test_spec_str_round_trips():
    spec = parse_spec("hf://org/repo@dev")
    assert str(spec) == "hf://org/repo@dev"
    assert parse_spec(str(spec)) == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("hf://", "no repository"),
        ("hf://org/repo@", "empty revision"),
        ("hf://org/repo/model.safetensors", "3 path parts"),
        ("hf:///repo", "empty organisation or repository name"),
        ("hf://org/-repo", "'-repo' is not a valid name"),
        ("hf://org/re..po", "'re..po' is not a valid name"),
        ("hf://org/re po", "'re po' is not a valid name"),
        ("s3://bucket/key", "unknown scheme 's3://'"),
    ],
)
def test_parse_invalid(spec, message):
    with pytest.raises(HubSpecError) as e:
        parse_spec(spec)
    assert message in str(e.value)
    assert repr(spec) in str(e.value)
    assert isinstance(e.value, MlxloadError)
    assert isinstance(e.value, ValueError)


def test_a_home_of_an_unknown_user_is_a_missing_path_not_a_crash(tmp_path, monkeypatch):
    # Path.expanduser raises RuntimeError ("Could not determine home directory") here.
    monkeypatch.chdir(tmp_path)
    assert not is_hub_spec("~nosuchuser/x")
    with pytest.raises(mlxload.CheckpointNotFoundError, match="~nosuchuser/x: no such file"):
        mlxload.load("~nosuchuser/x")


def test_bare_repo_id_is_hub_only_when_no_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_spec("org/model")
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert not is_hub_spec("org/model")  # an existing local directory wins
    assert is_hub_spec("hf://org/model")  # unless the scheme says otherwise


def test_bare_repo_id_with_a_slashed_revision_is_a_hub_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_spec("org/model@refs/pr/1")
    assert is_hub_spec("org/model@v1")
    assert not is_hub_spec("org/model/extra@v1")


@pytest.mark.parametrize(
    "spec",
    ["./org/model", "/abs/model", "model.safetensors", "a/b/c", "dir/model.json", "", "mydir/"],
)
def test_paths_are_not_hub_specs(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_hub_spec(spec)


def test_resolve_returns_none_for_existing_local_path(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    assert resolve(str(f)) is None
    assert resolve(tmp_path) is None


def test_resolve_rejects_malformed_hf_spec():
    with pytest.raises(HubSpecError, match="empty revision"):
        resolve("hf://org/repo@")


def test_import_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, mlxload.hub, mlxload.hub.spec; "
        "print(sorted(m for m in ('huggingface_hub', 'httpx2', 'filelock', 'tqdm') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_typo_under_an_existing_local_directory_stays_local(tmp_path, monkeypatch):
    from mlxload.hub.spec import is_hub_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert not is_hub_spec("models/typo")
    assert is_hub_spec("someorg/somerepo")
    with pytest.raises(FileNotFoundError, match="models/typo"):
        mlxload.load("models/typo")


@pytest.mark.parametrize(
    "path,blob,sha",
    [
        ("../../etc/passwd", "a" * 40, None),
        ("/abs/model.safetensors", "a" * 40, None),
        ("a/./b.json", "a" * 40, None),
        ("ok.json", "../blob", None),
        ("ok.safetensors", "a" * 40, "not-a-sha"),
    ],
)
def test_unsafe_or_malformed_listing_entries_are_refused(path, blob, sha):
    from mlxload.hub.errors import HubError
    from mlxload.hub.listing import RemoteFile

    with pytest.raises(HubError, match=r"unsafe path|malformed"):
        RemoteFile(path=path, size=1, blob_id=blob, sha256=sha)


@pytest.mark.parametrize("revision", ["/etc/x", "../x", "a//b", "a\\b", "", " main"])
def test_a_revision_that_would_name_a_file_outside_the_cache_is_refused(hub, revision):  # noqa: F811
    """It names a file under refs/: an absolute path wrote the ref outside the cache."""
    from mlxload.hub import download

    with pytest.raises(HubSpecError, match="invalid revision"):
        download(REPO, revision or "", progress=False)
