"""Offline use of the cache: no request at all when complete, the missing files named if not."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_fixtures import REPO, hub  # noqa: F401  (fixture)
from hub_server import hub_env

from mlxload.hub import OfflineError, download, resolve

SHARD2 = "model-00002-of-00003.safetensors"


def test_local_files_only_after_download_makes_no_request(hub):  # noqa: F811
    server, repo, _ = hub
    path = download(REPO, progress=False)
    server.clear_log()
    assert download(REPO, local_files_only=True) == path
    assert download(f"hf://{REPO}@{repo.commit}", local_files_only=True) == path
    assert resolve(f"hf://{REPO}", local_files_only=True) == path
    assert server.requests == []


def test_hf_hub_offline_after_download_makes_no_request(hub, monkeypatch):  # noqa: F811
    from huggingface_hub import constants

    server, _, _ = hub
    path = download(REPO, progress=False)
    server.clear_log()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert download(REPO) == path
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # also when set after import
    assert download(REPO) == path
    assert server.requests == []


def test_offline_with_a_missing_shard_names_it(hub, monkeypatch):  # noqa: F811
    server, repo, _ = hub
    path = download(REPO, progress=False)
    (path / SHARD2).resolve().unlink()  # the blob
    (path / SHARD2).unlink()  # the snapshot link
    server.clear_log()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError) as e:
        download(REPO)
    msg = str(e.value)
    assert f"missing 1 file(s): {SHARD2}" in msg
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in msg
    assert f"mlxload download {REPO}" in msg
    assert server.requests == []

    monkeypatch.delenv("HF_HUB_OFFLINE")
    path = download(REPO, progress=False)  # online again: only the missing shard is fetched
    assert [r.path.rsplit("/", 1)[1] for r in server.gets()] == [SHARD2]
    assert (path / SHARD2).read_bytes() == repo.files[SHARD2]


def test_offline_with_patterns_checks_those_files(hub):  # noqa: F811
    server, _, _ = hub
    download(REPO, allow_patterns=["*.json"], progress=False)
    server.clear_log()
    assert download(REPO, allow_patterns=["*.json"], local_files_only=True).is_dir()
    with pytest.raises(OfflineError, match=r"missing 4 file\(s\): merges\.txt, model-00001-of"):
        download(REPO, local_files_only=True)  # the default selection also needs the shards
    assert server.requests == []  # neither offline call asked the server anything


def test_offline_never_downloaded(hub):  # noqa: F811
    server, _, _ = hub
    with pytest.raises(OfflineError) as e:
        download(REPO, local_files_only=True)
    assert f"hf://{REPO}@main is not in the cache" in str(e.value)
    assert "local_files_only=True" in str(e.value)
    assert server.requests == []


def test_unreachable_hub_falls_back_to_complete_cache(hub):  # noqa: F811
    import huggingface_hub

    server, _, _ = hub
    path = download(REPO, progress=False)
    server.stop()
    huggingface_hub.close_session()
    with pytest.warns(UserWarning, match=r"@main: the Hub is unreachable .*; using the cached "
                      rf"snapshot {path.name[:12]}, which may be out of date") as seen:  # fmt: skip
        assert download(REPO, progress=False) == path
    (warning,) = seen
    assert warning.filename == __file__  # the caller's line, not mlxload's
    assert "run the same command again" not in str(warning.message)  # a download's advice


def test_a_branch_the_hub_says_has_moved_never_falls_back_to_the_old_snapshot(
    hub,  # noqa: F811
    monkeypatch,
):
    """The Hub said main is at a new commit, then the listing failed: the cached snapshot of
    the old commit came back, silently stale."""
    from hub_server import TREE, Fault

    from mlxload.hub import DownloadError
    from mlxload.hub import transfer as transfer_mod

    server, repo, _ = hub
    download(REPO, progress=False)
    monkeypatch.setattr(transfer_mod, "BACKOFF_S", 0.01)
    repo.refs["main"] = "f" * 40
    server.add_fault(REPO, TREE, Fault("status", status=503, times=-1))
    with pytest.raises(DownloadError, match="503"):
        download(REPO, progress=False)


def test_a_bare_name_with_the_hub_unreachable_says_no_such_local_path_either(tmp_path, monkeypatch):
    """A mistyped local path, with no network, read as a network problem only."""
    import mlxload
    from mlxload.hub import DownloadError

    hub_env(monkeypatch, None, tmp_path / "hf")  # nothing listens there
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DownloadError) as e:
        mlxload.load("models/llama-3")
    assert "could not download from http://127.0.0.1:9" in str(e.value)
    assert str(e.value).endswith("(no local path 'models/llama-3' exists either)")


def test_a_bare_name_that_is_neither_local_nor_cached_says_both(hub, tmp_path, monkeypatch):  # noqa: F811
    import mlxload
    from mlxload.hub.errors import RepoNotFoundError

    monkeypatch.chdir(tmp_path)  # no ./models here
    with pytest.raises(OfflineError) as e:
        resolve("models/llama-3", local_files_only=True)
    assert str(e.value).endswith("(no local path 'models/llama-3' exists either)")
    with pytest.raises(
        RepoNotFoundError, match=r"\(no local path 'models/llama-3' exists either\)$"
    ):
        mlxload.load("models/llama-3")  # online: the stand-in has no such repository
    with pytest.raises(OfflineError) as e:
        resolve("hf://models/llama-3", local_files_only=True)  # a Hub name, said so
    assert "no local path" not in str(e.value)


def test_a_bare_name_the_hub_knows_gets_no_local_path_hint(tmp_path, monkeypatch):
    from hub_fixtures import checkpoint_files, serve
    from hub_server import FakeRepo

    import mlxload
    from mlxload.hub.errors import GatedRepoError

    monkeypatch.chdir(tmp_path)
    repo = FakeRepo("acme/gated", checkpoint_files(tmp_path), gated=True)
    server, _ = serve(monkeypatch, tmp_path, repo)
    try:
        with pytest.raises(GatedRepoError) as e:
            mlxload.load("acme/gated")
        assert "no local path" not in str(e.value)
    finally:
        server.stop()


def test_offline_a_shard_cut_short_is_missing_not_served(hub):  # noqa: F811
    """A blob shorter than the listing says (a full disk, a bad copy) was taken as present."""
    _, repo, _ = hub
    path = download(REPO, progress=False)
    blob = (path / SHARD2).resolve()
    blob.write_bytes(repo.files[SHARD2][:-100])
    with pytest.raises(OfflineError, match=rf"missing 1 file\(s\): {SHARD2}"):
        download(REPO, local_files_only=True)
    path = download(REPO, progress=False)  # online: fetched again
    assert (path / SHARD2).read_bytes() == repo.files[SHARD2]


def test_offline_a_snapshot_fetched_file_by_file_is_used_with_a_warning(hub, monkeypatch):  # noqa: F811
    """huggingface_hub's hf_hub_download saves no file listing: with one shard of three and no
    index, the snapshot was taken for the whole model, silently."""
    from huggingface_hub import hf_hub_download

    server, repo, _ = hub
    for name in ("config.json", "model-00001-of-00003.safetensors"):
        hf_hub_download(REPO, name)
    server.clear_log()
    with pytest.warns(UserWarning) as caught:
        path = download(REPO, local_files_only=True)
    assert path.name == repo.commit
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(
        f"hf://{REPO}@main (commit {repo.commit[:12]}): the cache holds no file listing for "
        "this snapshot (its files were fetched one by one, e.g. with hf_hub_download), so "
        "whether it is the whole model can't be checked while --offline"
    )
    assert "using the 1 weights file(s) there (model-00001-of-00003.safetensors)" in message
    assert message.endswith(f"`mlxload download {REPO}` with network access completes it")
    assert server.requests == []


def test_offline_a_lone_model_safetensors_needs_no_listing(hub):  # noqa: F811
    import warnings

    from huggingface_hub import hf_hub_download

    _, repo, _ = hub
    snapshot = Path(hf_hub_download(REPO, "config.json")).parent
    (snapshot / "model.safetensors").write_bytes(repo.files["model-00001-of-00003.safetensors"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert download(REPO, local_files_only=True) == snapshot


def test_the_offline_hint_names_the_revision_and_cache_it_needs(hub, tmp_path):  # noqa: F811
    with pytest.raises(OfflineError) as e:
        download(f"{REPO}@v1", local_files_only=True, cache_dir=tmp_path / "c")
    assert f"run `mlxload download {REPO}@v1 --cache-dir {tmp_path / 'c'}` with network" in str(
        e.value
    )


def test_a_rate_limited_hub_lets_the_complete_cache_stand_in(hub, monkeypatch):  # noqa: F811
    """A 429 from the commit lookup failed a load whose files were all cached."""
    from hub_server import REVISION, Fault

    from mlxload.hub import transfer as transfer_mod

    server, _, _ = hub
    path = download(REPO, progress=False)
    monkeypatch.setattr(transfer_mod, "BACKOFF_S", 0.01)
    server.add_fault(REPO, REVISION, Fault("status", status=429, times=-1))
    with pytest.warns(UserWarning, match="HTTP 429.*using the cached snapshot"):
        assert download(REPO, progress=False) == path
