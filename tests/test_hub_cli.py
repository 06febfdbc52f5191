"""``mlxload download``: prints the snapshot path; errors are one line and exit code 1."""

from __future__ import annotations

import pytest
from hub_fixtures import REPO, hub  # noqa: F401  (fixture)

from mlxload.cli import download as cli_download


def test_download_prints_snapshot_path(hub, capsys):  # noqa: F811
    server, repo, _ = hub
    assert cli_download.main([f"hf://{REPO}", "--workers", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith(f"models--acme--tiny-3shard/snapshots/{repo.commit}")
    assert len(server.gets()) == 8


def test_include_and_local_dir(hub, capsys, tmp_path):  # noqa: F811
    _, repo, _ = hub
    dest = tmp_path / "plain"
    argv = [REPO, "--include", "*.json", "--include", "*.bin", "--local-dir", str(dest)]
    assert cli_download.main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(dest)
    names = sorted(p.name for p in dest.iterdir())
    assert names == [
        "config.json",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert not (dest / "config.json").is_symlink()
    assert (dest / "pytorch_model.bin").read_bytes() == repo.files["pytorch_model.bin"]


def test_repo_after_include_is_named_as_the_mistake_and_dash_dash_ends_patterns(
    hub,  # noqa: F811
    capsys,
    tmp_path,
):
    """``--include`` takes several values, so a REPO after it is swallowed: say so."""
    assert cli_download.main(["--include", "*.json", REPO, "--no-progress"]) == 2  # usage
    err = capsys.readouterr().err
    assert "no REPO given (--include took every value after it: ['*.json', 'acme/" in err
    assert "put REPO first" in err and "`--`" in err
    dest = tmp_path / "d"
    argv = ["--include", "config.json", "--local-dir", str(dest), "--no-progress", "--", REPO]
    assert cli_download.main(argv) == 0
    assert [p.name for p in dest.iterdir()] == ["config.json"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "no REPO given (usage: mlxload download REPO"),
        ([REPO, "--workers", "0"], "--workers must be at least 1, got 0"),
    ],
)
def test_usage_errors_exit_2_as_argparse_does(capsys, argv, words):
    assert cli_download.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlxload download: error: {words}") and err.count("\n") == 1


def test_local_dir_gets_this_downloads_selection_not_the_whole_cached_snapshot(
    hub,  # noqa: F811
    capsys,
    tmp_path,
):
    _, repo, _ = hub
    assert cli_download.main([REPO, "--include", "*", "--no-progress"]) == 0  # a wider fetch
    snapshot = capsys.readouterr().out.strip()
    assert (tmp_path / snapshot / "pytorch_model.bin").is_file()
    default = tmp_path / "default"
    assert cli_download.main([REPO, "--local-dir", str(default), "--no-progress"]) == 0
    names = sorted(p.name for p in default.iterdir())
    assert names == sorted(set(repo.files) - {"pytorch_model.bin", "README.md"})
    only = tmp_path / "only"
    argv = [REPO, "--include", "config.json", "--local-dir", str(only), "--no-progress"]
    assert cli_download.main(argv) == 0
    assert [p.name for p in only.iterdir()] == ["config.json"]


def test_errors_are_reported_not_raised(hub, capsys):  # noqa: F811
    assert cli_download.main(["acme/missing", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mlxload download: error: hf://acme/missing@main: repository not found")
    assert cli_download.main([REPO, "--offline", "--revision", "dev"]) == 1
    assert "hf://acme/tiny-3shard@dev is not in the cache" in capsys.readouterr().err


def test_dispatcher_runs_the_verb(hub, capsys):  # noqa: F811
    from mlxload.cli import main

    _, repo, _ = hub
    assert main(["download", REPO, "--no-progress", "--workers", "1"]) == 0
    assert capsys.readouterr().out.strip().endswith(repo.commit)
    assert main(["download", "hf://bad//spec"]) == 1
    assert "invalid Hub spec" in capsys.readouterr().err


def test_inspect_of_a_hub_repo_fetches_headers_only(hub, capsys, monkeypatch):  # noqa: F811
    import json
    import struct

    import mlxload.hub.range_fetch as range_fetch
    from mlxload.cli import main

    server, repo, _ = hub
    monkeypatch.setattr(range_fetch, "HEADER_GUESS", 64)  # the test shards are a few KB
    shards = sorted(n for n in repo.files if n.endswith(".safetensors"))
    header_ends = [8 + struct.unpack("<Q", repo.files[n][:8])[0] for n in shards]
    assert main(["inspect", f"hf://{REPO}", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["files"] == shards and doc["total_tensors"] == 6
    assert doc["fetched_bytes"] == sum(header_ends)  # exactly the headers
    gets = server.gets(".safetensors")
    assert gets and all("range" in r.headers for r in gets)
    assert main(["inspect", f"hf://{REPO}"]) == 0
    out = capsys.readouterr().out
    assert "layers.1.weight" in out and "fetched for the headers; the weights were not" in out


def test_inspect_of_a_repo_of_small_files_says_it_took_them_whole(hub, capsys):  # noqa: F811
    """It said 'fetched for the headers; the weights were not' of files a header read took
    whole (the test shards are smaller than the first read of a header)."""
    from mlxload.cli import main

    assert main(["inspect", f"hf://{REPO}"]) == 0
    out = capsys.readouterr().out
    assert "the whole files: they are that small)" in out
    assert "the weights were not" not in out


def test_inspect_from_a_filled_cache_says_nothing_was_fetched(hub, capsys, monkeypatch):  # noqa: F811
    from mlxload.cli import main

    assert cli_download.main([REPO, "--no-progress"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["inspect", f"hf://{REPO}"]) == 0
    out = capsys.readouterr().out
    assert "(read from the local Hub cache: nothing fetched)" in out
    assert "from the Hub:" not in out


def _one_file_repo(tmp_path, *extra: str) -> dict[str, bytes]:
    """model.safetensors (tensors a, b) and config.json, plus copies under ``extra`` names."""
    import mlx.core as mx

    path = tmp_path / "m.safetensors"
    mx.save_safetensors(str(path), {"a": mx.zeros((4, 4)), "b": mx.ones((2,))})
    files = {"model.safetensors": path.read_bytes(), "config.json": b'{"model_type": "llama"}'}
    return files | {name: path.read_bytes() for name in extra}


def _inspect_json(capsys, spec):
    import json

    from mlxload.cli import main

    code = main(["inspect", spec, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_inspect_of_a_repo_without_index_takes_the_files_a_download_takes(
    tmp_path, monkeypatch, capsys
):
    from hub_fixtures import serve
    from hub_server import FakeRepo

    # model.safetensors wins over other root weights, as in a download (not "stored twice")
    repo = FakeRepo("acme/noidx", _one_file_repo(tmp_path, "consolidated.safetensors"))
    server, _ = serve(monkeypatch, tmp_path, repo)
    try:
        doc = _inspect_json(capsys, "hf://acme/noidx")
        assert doc["files"] == ["model.safetensors"] and doc["total_tensors"] == 2
    finally:
        server.stop()


def test_inspect_offline_of_a_cache_huggingface_hub_filled(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from hub_fixtures import serve
    from hub_server import FakeRepo

    server, _ = serve(monkeypatch, tmp_path, FakeRepo("acme/noidx", _one_file_repo(tmp_path)))
    try:
        huggingface_hub.snapshot_download("acme/noidx")  # no mlxload listing in this cache
    finally:
        server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    doc = _inspect_json(capsys, "hf://acme/noidx")
    assert doc["total_tensors"] == 2 and doc["fetched_bytes"] == 0


def test_inspect_of_a_repo_with_weights_only_falls_back_to_downloading(
    tmp_path, monkeypatch, capsys
):
    from hub_fixtures import serve
    from hub_server import FakeRepo

    files = {"model.safetensors": _one_file_repo(tmp_path)["model.safetensors"]}
    server, _ = serve(monkeypatch, tmp_path, FakeRepo("acme/wonly", files))
    try:
        doc = _inspect_json(capsys, "hf://acme/wonly")  # no metadata file to start from
        assert doc["total_tensors"] == 2 and "fetched_bytes" not in doc
    finally:
        server.stop()


def test_an_index_naming_a_missing_shard_is_named(tmp_path, monkeypatch):
    from hub_fixtures import checkpoint_files, serve
    from hub_server import FakeRepo

    from mlxload.hub import download
    from mlxload.hub.errors import EntryNotFoundError
    from mlxload.hub.range_fetch import RangeFetch

    files = checkpoint_files(tmp_path)
    del files["model-00003-of-00003.safetensors"]
    server, _ = serve(monkeypatch, tmp_path, FakeRepo("acme/broken", files))
    try:
        fetch = RangeFetch(download("acme/broken", allow_patterns=["*.json"]), "acme/broken")
        with pytest.raises(
            EntryNotFoundError,
            match=r"@[0-9a-f]{40}: the repository has no model-00003-of-00003\.safetensors "
            r"\(named by its safetensors index\)$",
        ):
            fetch.open_shards(["model-00003-of-00003.safetensors"])
        fetch.close()
    finally:
        server.stop()


def test_warnings_print_as_one_line_of_the_verb(hub, capsys):  # noqa: F811
    """They printed as Python's 'FILE:LINE: UserWarning: ...' plus a line of mlxload's code."""
    from huggingface_hub import hf_hub_download

    hf_hub_download(REPO, "model-00001-of-00003.safetensors")
    assert cli_download.main([REPO, "--offline"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"mlxload download: warning: hf://{REPO}@main (commit ")
    assert err.count("\n") == 1 and "UserWarning" not in err


@pytest.mark.parametrize("flag", ["--local-dir", "--cache-dir"])
def test_an_empty_directory_option_is_a_usage_error_not_the_current_directory(
    hub,  # noqa: F811
    capsys,
    tmp_path,
    monkeypatch,
    flag,
):
    """``--local-dir "$DEST"`` with DEST unset overwrote the current directory's config.json."""
    server, _, _ = hub
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    (project / "config.json").write_text("mine")
    assert cli_download.main([REPO, flag, "", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"mlxload download: error: {flag} is empty; give a directory" in err
    assert sorted(p.name for p in project.iterdir()) == ["config.json"]
    assert (project / "config.json").read_text() == "mine"
    assert server.gets() == []


def test_local_dir_with_a_tilde_is_the_home_directory(hub, capsys, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HOME", str(tmp_path))
    assert (
        cli_download.main([REPO, "--include", "*.json", "--local-dir", "~/m", "--no-progress"]) == 0
    )
    assert capsys.readouterr().out.strip() == str(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").is_file()


@pytest.mark.parametrize("flag", ["--local-dir", "--cache-dir"])
def test_a_file_for_a_directory_option_is_a_usage_error(hub, capsys, tmp_path, flag):  # noqa: F811
    server, _, _ = hub
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert cli_download.main([REPO, flag, str(afile), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"mlxload download: error: {flag} {afile} is a file; give a directory\n"
    assert afile.read_text() == "mine" and server.gets() == []
