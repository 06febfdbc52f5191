"""fetch="ranges": tensor-parallel ranks fetch only the bytes they read from a Hub stand-in.

Each rank of a 2-way split (``FakeGroup``: no communication needed to load) must end with
the parameters of a full local load followed by mlx-lm's own ``shard``, while the server
sees only Range requests for shard files, adding up to the rank's share rather than the
whole checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from dist_fixtures import llama_checkpoint
from hub_fixtures import seconds_to_stop_after_ctrl_c
from hub_server import FakeRepo, Fault, HubServer, hub_env
from test_distributed_plan import FakeGroup, _assert_same

import mlxload.hub.range_fetch as range_fetch
import mlxload.hub.transfer as transfer
from mlxload import InvalidArgumentError
from mlxload.distributed import load_model_sharded
from mlxload.hub import download
from mlxload.hub.errors import DownloadError, HubError, IntegrityError
from mlxload.hub.range_fetch import RangeFetch
from mlxload.model import load_model

REPO = "acme/llama-tp"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture
def served(cache, tmp_path, monkeypatch):
    """(server, local checkpoint, shard sizes): the synthetic Llama on a Hub stand-in."""
    path = llama_checkpoint(cache)
    files = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    # The stand-in's shards are kilobytes: with the default 1 MiB of hole filling (and a first
    # 128 KiB for the header) a rank would fetch them whole. Real shards are gigabytes.
    monkeypatch.setattr(range_fetch, "GAP", 4096)
    monkeypatch.setattr(range_fetch, "HEADER_GUESS", 1024)
    with HubServer(FakeRepo(REPO, files)) as server:
        hub_env(monkeypatch, server, tmp_path / "home")
        sizes = {n: len(b) for n, b in files.items() if n.endswith(".safetensors")}
        yield server, path, sizes


def _served_bytes(server, sizes) -> int:
    """Body bytes the server sent for shard files, from the Range header of each GET."""
    total = 0
    for r in server.gets(".safetensors"):
        a, _, b = r.headers["range"].removeprefix("bytes=").partition("-")
        total += int(b) - int(a) + 1
    return total


def _ranges_temp_dirs() -> set[Path]:
    """This process's range-fetch directories (another process may be fetching meanwhile)."""
    return set(Path(tempfile.gettempdir()).glob(f"mlxload-ranges-{os.getpid()}-*"))


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_fetches_only_its_ranges_and_loads_what_shard_gives(served, rank):
    server, path, sizes = served
    before = _ranges_temp_dirs()
    model, _, _ = load_model_sharded(
        f"hf://{REPO}", tensor_group=FakeGroup(rank, 2), dtype="float32", fetch="ranges"
    )
    ref, _, _ = load_model(path, dtype="float32")
    ref.shard(FakeGroup(rank, 2))
    _assert_same(model, ref)

    gets = server.gets(".safetensors")
    assert gets and all("range" in r.headers for r in gets)  # never a whole shard
    fetched = _served_bytes(server, sizes)
    report = model.load_report
    assert report.bytes_fetched == fetched
    assert report.shards_downloaded == 0
    whole = sum(sizes.values())
    print(f"rank {rank}: fetched {fetched} of {whole} bytes, read {report.bytes_read}")
    assert report.bytes_read <= fetched < 0.75 * whole
    assert _ranges_temp_dirs() == before  # the partial files are gone


def test_ranges_that_add_up_to_a_whole_shard_are_checked_against_its_sha256(served):
    server, _, sizes = served
    snapshot = download(f"hf://{REPO}", allow_patterns=["*.json"])  # the listing, cached
    name = sorted(sizes)[1]
    (repo,) = server.repos.values()
    data = bytearray(repo.files[name])
    data[-3] ^= 0xFF  # the mirror's copy goes bad after the listing was taken
    repo.files[name] = bytes(data)
    fetch = RangeFetch(snapshot, REPO)
    try:
        local = fetch.open_shards([name])[name]
        fetch.fetch({local: [(0, sizes[name] // 2)]})  # half: nothing to check it against yet
        with pytest.raises(IntegrityError, match=rf"^{name}: sha256 mismatch after fetching"):
            fetch.fetch({local: [(sizes[name] // 2, sizes[name])]})
    finally:
        fetch.close()


def test_ctrl_c_stops_range_fetches_waiting_on_a_stalled_server_at_once(served):
    server, _, sizes = served
    snapshot = download(f"hf://{REPO}", allow_patterns=["*.json"])
    fetch = RangeFetch(snapshot, REPO, workers=2)
    try:
        local = fetch.open_shards(sorted(sizes))
        for name in sizes:  # 16 bytes, then nothing for 16 s
            server.add_fault(REPO, name, Fault("slow", rate=1.0, after=16, times=-1))
        wanted = {path: [(2048, sizes[name])] for name, path in local.items()}
        took = seconds_to_stop_after_ctrl_c(lambda: fetch.fetch(wanted))
        assert took < 5, f"Ctrl-C took {took:.1f} s to stop the fetch"
    finally:
        fetch.close()


def test_a_shard_completed_by_a_fetch_that_failed_elsewhere_is_still_checked(served):
    """Ranges are recorded as they land, so a failing shard can end a fetch after another
    shard was completed: that one is checked against its sha256 by the next fetch wanting
    it, and a mismatch makes it fetched again."""
    server, path, sizes = served
    snapshot = download(f"hf://{REPO}", allow_patterns=["*.json"])
    failing, corrupt = sorted(sizes)[:2]
    fetch = RangeFetch(snapshot, REPO, workers=2)
    try:
        local = fetch.open_shards([failing, corrupt])
        server.add_fault(REPO, corrupt, Fault("corrupt"))
        server.add_fault(REPO, failing, Fault("status", status=404, delay=0.7))
        wanted = {local[name]: [(0, sizes[name])] for name in (failing, corrupt)}
        with pytest.raises(HubError, match=failing):
            fetch.fetch(wanted)
        assert fetch.have[local[corrupt]].covers(0, sizes[corrupt])  # done before the 404
        with pytest.raises(IntegrityError, match=rf"^{corrupt}: sha256 mismatch"):
            fetch.fetch(wanted)
        fetch.fetch(wanted)
        assert local[corrupt].read_bytes() == (path / corrupt).read_bytes()
        assert local[failing].read_bytes() == (path / failing).read_bytes()
    finally:
        fetch.close()


def test_a_server_that_ignores_range_is_a_clear_error(served):
    server, _, sizes = served
    name = sorted(sizes)[0]
    server.add_fault(REPO, name, Fault("cut", after=10**9, times=-1, ignore_range=True))
    with pytest.raises(
        DownloadError,
        match=rf"^{name}: asked for bytes=0-1023, the server answered HTTP 200 without a range; "
        "it can't serve parts of files: load with fetch='files'$",
    ):
        load_model_sharded(
            f"hf://{REPO}", tensor_group=FakeGroup(0, 2), dtype="float32", fetch="ranges"
        )


def test_fetch_ranges_without_a_group_is_refused(served):
    _, path, _ = served
    with pytest.raises(InvalidArgumentError) as info:
        load_model(path, fetch="ranges")
    assert str(info.value) == (
        "fetch must be 'files' without tensor_group/pipeline_group (a single process reads "
        "every tensor, so it downloads whole files), got 'ranges'"
    )
    with pytest.raises(InvalidArgumentError) as info:
        load_model_sharded(path, tensor_group=FakeGroup(0, 2), fetch="some")
    assert str(info.value) == "fetch must be 'files' or 'ranges', got 'some'"
    assert isinstance(info.value, ValueError)


def test_dropped_connections_and_busy_answers_are_retried(served):
    server, path, sizes = served
    for name in sizes:  # the first request of each shard is cut short, the next one says 503
        server.add_fault(REPO, name, Fault("cut", after=4, times=1))
        server.add_fault(REPO, name, Fault("status", status=503, times=1))
    model, _, _ = load_model_sharded(
        f"hf://{REPO}", tensor_group=FakeGroup(1, 2), dtype="float32", fetch="ranges"
    )
    ref, _, _ = load_model(path, dtype="float32")
    ref.shard(FakeGroup(1, 2))
    _assert_same(model, ref)


def test_shards_already_in_the_cache_are_read_from_there(served):
    server, path, _ = served
    download(f"hf://{REPO}")  # a complete, verified snapshot
    server.clear_log()
    model, _, _ = load_model_sharded(
        f"hf://{REPO}", tensor_group=FakeGroup(0, 2), dtype="float32", fetch="ranges"
    )
    assert server.gets(".safetensors") == [] and model.load_report.bytes_fetched == 0
    ref, _, _ = load_model(path, dtype="float32")
    ref.shard(FakeGroup(0, 2))
    _assert_same(model, ref)


def test_a_read_outside_the_fetched_ranges_is_an_error_not_zeros(tmp_path):
    import mlx.core as mx

    from mlxload.byte_ranges import ByteRanges
    from mlxload.errors import RangeNotFetchedError
    from mlxload.header import read_header
    from mlxload.tensor_file import TensorFile

    path = tmp_path / "w.safetensors"
    mx.save_safetensors(str(path), {"a": mx.arange(64, dtype=mx.float32), "b": mx.ones((8, 8))})
    header = read_header(path)
    a, b = header.tensors["a"], header.tensors["b"]
    readable = ByteRanges([(0, header.data_start), (a.offset, a.offset + a.nbytes)])
    tf = TensorFile(path, zero_copy=True, readable=readable)  # never mapped: holes would show
    try:
        assert mx.array_equal(tf.read(["a"])["a"], mx.arange(64, dtype=mx.float32)).item()
        with pytest.raises(
            RangeNotFetchedError,
            match=rf"^{path}: bytes {b.offset}-{b.offset + 32} were read but never fetched",
        ):
            tf.read_block("b", rows=(0, 1))
        readable.add(b.offset, b.offset + b.nbytes)
        assert mx.array_equal(tf.read(["b"])["b"], mx.ones((8, 8))).item()
        assert set(tf.paths.values()) == {"copy"}
    finally:
        tf.close()


def test_short_writes_are_completed_and_a_full_disk_is_a_download_error(served, monkeypatch):
    import os

    _, path, _ = served
    real = os.pwrite

    def short(fd, data, offset):  # what pwrite does as a disk fills: writes less, no error
        return real(fd, bytes(data)[: max(1, len(data) // 2)], offset)

    monkeypatch.setattr(range_fetch.os, "pwrite", short)
    model, _, _ = load_model_sharded(
        f"hf://{REPO}", tensor_group=FakeGroup(0, 2), dtype="float32", fetch="ranges"
    )
    ref, _, _ = load_model(path, dtype="float32")
    ref.shard(FakeGroup(0, 2))
    _assert_same(model, ref)  # every byte written: no zeros taken for weights

    monkeypatch.setattr(range_fetch.os, "pwrite", lambda fd, data, offset: 0)
    before = _ranges_temp_dirs()
    with pytest.raises(
        DownloadError, match=r"cannot write the fetched bytes: \[Errno 28\] no byte written"
    ):
        load_model_sharded(
            f"hf://{REPO}", tensor_group=FakeGroup(0, 2), dtype="float32", fetch="ranges"
        )
    assert _ranges_temp_dirs() == before


def test_a_link_that_drops_after_every_few_bytes_runs_out_of_retries(served, monkeypatch):
    server, _, sizes = served
    monkeypatch.setattr(transfer, "BACKOFF_S", 0.001)  # the Hub code's one retry schedule
    for name in sizes:
        server.add_fault(REPO, name, Fault("cut", after=3, times=-1))
    with pytest.raises(DownloadError, match=r"gave up on bytes \d+-\d+ after 6 attempts in a row"):
        load_model_sharded(
            f"hf://{REPO}", tensor_group=FakeGroup(0, 2), dtype="float32", fetch="ranges"
        )
    assert len(server.gets(".safetensors")) < 100  # not one request per 3 bytes


def test_folders_of_dead_loads_are_swept_and_live_ones_kept(served, tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / "mlxload-ranges-999999999-abc"  # no such process
    live = tmp_path / f"mlxload-ranges-{os.getppid()}-def"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
    load_model_sharded(f"hf://{REPO}", tensor_group=FakeGroup(0, 2), fetch="ranges")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("mlxload-")) == [
        live.name
    ]


@pytest.mark.parametrize(
    ("status", "headers", "error", "message"),
    [
        (206, {"content-range": "bytes 0-9/100", "content-length": "10"}, None, None),
        (206, {"content-range": "bytes 0-9/100"}, None, None),  # no length: the body decides
        (
            206,
            {"content-range": "bytes 0-9/100", "content-encoding": "gzip"},
            DownloadError,
            "with Content-Encoding 'gzip' and Content-Length None, not the 10 plain bytes",
        ),
        (
            206,
            {"content-range": "bytes 0-9/100", "content-length": "7"},
            DownloadError,
            "Content-Length 7, not the 10 plain bytes",
        ),
        (206, {"content-range": "bytes 0-9/99"}, IntegrityError, "not the 100 bytes the Hub"),
        (206, {"content-range": "bytes 10-19/100"}, DownloadError, "can't serve parts of files"),
    ],
)
def test_range_answers_are_taken_only_as_asked(status, headers, error, message):
    from types import SimpleNamespace

    from mlxload.hub.listing import RemoteFile

    file = RemoteFile("w.safetensors", 100, "a" * 40, "b" * 64)
    response = SimpleNamespace(status_code=status, headers=headers)
    if error is None:
        range_fetch._check_answer(file, response, "bytes 0-9/100", 10)
        return
    with pytest.raises(error, match=message):
        range_fetch._check_answer(file, response, "bytes 0-9/100", 10)


def test_a_pipeline_rank_fetches_ranges_of_only_its_shards(cache, tmp_path, monkeypatch):
    from dist_fixtures import qwen2_checkpoint

    path = qwen2_checkpoint(cache)  # embeddings, one shard per layer, then norm and head
    files = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with HubServer(FakeRepo("acme/qwen2-pipe", files)) as server:
        hub_env(monkeypatch, server, tmp_path / "home")
        model, _, _ = load_model_sharded(
            "hf://acme/qwen2-pipe", pipeline_group=FakeGroup(1, 2), dtype="float32", fetch="ranges"
        )
        fetched = {r.path.rsplit("/", 1)[1] for r in server.gets(".safetensors")}
    index = json.loads(files["model.safetensors.index.json"])["weight_map"]
    wanted = {index["model.embed_tokens.weight"], index["lm_head.weight"]}
    wanted |= {index[f"model.layers.{i}.mlp.up_proj.weight"] for i in (0, 1)}
    assert fetched == wanted  # mlx-lm gives the last rank the first layers
    ref, _, _ = load_model(path, dtype="float32")
    ref.model.pipeline(FakeGroup(1, 2))
    _assert_same(model, ref)
