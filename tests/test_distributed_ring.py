"""Real 2-rank jobs: ``mlx.launch --backend ring -n 2`` on 127.0.0.1, one process per rank.

Each rank loads its part with ``load_model_sharded`` and writes its logits for a fixed prompt
and its load report (see ``distributed_rank.py``). Skipped when the ring backend can't start
here (no ``mlx.launch``, no loopback sockets), found by a 2-rank ``all_sum`` probe first.

Tolerance: pipeline ranks run the same layers in the same order as one process, so their
logits are compared exactly. Tensor-parallel ranks compute o_proj and down_proj as two partial
products over halves of the input, summed by ``all_sum``: float32 addition in another order, so
their logits differ from an unsharded model's by rounding (measured max 4.4e-6 with logits up to
3.9); they are compared with ``atol = 1e-4 * max|logit|``, and exactly against ``load_model`` +
mlx-lm's own ``shard`` in the same job (``same_parameters``/``same_logits``).
"""

from __future__ import annotations

import json
import subprocess

import mlx.core as mx
import numpy as np
import pytest
from dist_fixtures import PROMPT, RANK_SCRIPT, launch_ring, llama_checkpoint, qwen2_checkpoint
from distributed_rank import HUB_SPEC
from hub_server import FakeRepo, HubServer, hub_env

from mlxload.model import load_model

TIMEOUT = 120


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ring-ckpt")


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    """Skip the module unless a 2-rank ring job can start and all_sum here."""
    out = tmp_path_factory.mktemp("ring-probe")
    try:
        result = launch_ring(RANK_SCRIPT, "probe", "-", str(out), timeout=60)
    except FileNotFoundError as e:
        pytest.skip(f"ring backend unavailable: {e}")
    except subprocess.TimeoutExpired:
        pytest.skip("ring backend unavailable: a 2-rank all_sum probe didn't finish in 60 s")
    sums = [out / f"rank-{r}.json" for r in (0, 1)]
    if not all(p.is_file() for p in sums):
        pytest.skip(f"ring backend unavailable: probe ranks failed: {result.stderr[-800:]}")
    assert [json.loads(p.read_text())["sum"] for p in sums] == [3.0, 3.0]


def _run(mode: str, path, out) -> list[tuple[dict, np.ndarray]]:
    result = launch_ring(RANK_SCRIPT, mode, str(path), str(out), timeout=TIMEOUT)
    ranks = []
    for r in (0, 1):
        report, logits = out / f"rank-{r}.json", out / f"logits-{r}.npy"
        assert report.is_file() and logits.is_file(), (
            f"rank {r} wrote no result:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
        ranks.append((json.loads(report.read_text()), np.load(logits)))
    return ranks


def _full_logits(path) -> np.ndarray:
    model, _, _ = load_model(path, dtype="float32")
    return np.array(model(mx.array(PROMPT)[None]).astype(mx.float32))


def test_tensor_parallel_two_ranks(ring, cache, tmp_path):
    path = llama_checkpoint(cache)
    ranks = _run("tensor", path, tmp_path)
    full = _full_logits(path)
    for rank, (report, logits) in enumerate(ranks):
        assert report["tensor_rank"] == rank and report["tensor_size"] == 2
        assert report["same_parameters"] and report["same_logits"], report
        assert logits.shape == full.shape == (1, len(PROMPT), 256)
        np.testing.assert_allclose(logits, full, rtol=0, atol=1e-4 * np.abs(full).max())
        assert (logits.argmax(-1) == full.argmax(-1)).all()
        assert report["bytes_read"] <= 0.55 * report["checkpoint_bytes"], report
        assert report["blocks"]["rows"] > 0 and report["blocks"]["columns"] > 0
    assert np.array_equal(ranks[0][1], ranks[1][1])  # all_sum leaves every rank the same


def test_pipeline_two_ranks(ring, cache, tmp_path):
    path = qwen2_checkpoint(cache)
    ranks = _run("pipeline", path, tmp_path)
    full = _full_logits(path)
    layers = set()
    for rank, (report, logits) in enumerate(ranks):
        assert report["pipeline_rank"] == rank and report["pipeline_size"] == 2
        assert report["same_parameters"] and report["same_logits"], report
        assert np.array_equal(logits, full)
        assert report["shards_opened"] == 4  # embeddings, its 2 layers, head: not 6
        assert report["bytes_read"] <= 0.55 * report["checkpoint_bytes"], report
        layers.add(tuple(report["layers"]))
    assert layers == {(0, 2), (2, 4)}


def _with_unknown_tensor(path, tmp_path, name: str):
    """A copy of checkpoint ``path`` whose shard holding layer 3 (or any, for a name outside
    the layers) also holds tensor ``name``, which fits no parameter, listed in the index."""
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(path, copy)
    index_path = copy / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = next(f for n, f in index["weight_map"].items() if n.startswith("model.layers.3."))
    tensors = mx.load(str(copy / shard))
    mx.save_safetensors(str(copy / shard), {**tensors, name: mx.zeros((4,))})
    index["weight_map"][name] = shard
    index_path.write_text(json.dumps(index))
    return copy


def _errors(mode: str, path, out) -> list[dict]:
    result = launch_ring(RANK_SCRIPT, f"{mode}-refused", str(path), str(out), timeout=TIMEOUT)
    reports = [out / f"rank-{r}.json" for r in (0, 1)]
    assert all(p.is_file() for p in reports), result.stderr[-4000:]
    return [json.loads(p.read_text()) for p in reports]


def test_a_tensor_no_parameter_takes_is_refused_on_every_rank(ring, cache, tmp_path):
    """The per-rank load left it out silently, where load_model and mlx_lm.load refuse it."""
    path = _with_unknown_tensor(qwen2_checkpoint(cache), tmp_path, "model.foo.weight")
    for error in _errors("tensor", path, tmp_path):
        assert error["error"] == "ModelLoadError"
        assert "1 tensor(s) fit no parameter of the model: 'model.foo.weight'" in error["message"]


def test_a_refusal_on_one_pipeline_rank_stops_the_other_too(ring, cache, tmp_path):
    """Only the rank holding layer 3 reads its tensors, so only it can see the stray one; the
    other rank loaded, and would have waited for it at the model's first send for ever."""
    name = "model.layers.3.foo.weight"
    path = _with_unknown_tensor(qwen2_checkpoint(cache), tmp_path, name)
    errors = _errors("pipeline", path, tmp_path)
    assert [e["error"] for e in errors] == ["ModelLoadError", "ModelLoadError"]
    own = [f"1 tensor(s) fit no parameter of the model: {name!r}" in e["message"] for e in errors]
    other = ["another rank failed to load its part" in e["message"] for e in errors]
    assert sorted(own) == sorted(other) == [False, True] and own != other


def test_tensor_parallel_two_ranks_fetching_ranges_from_the_hub(ring, cache, tmp_path, monkeypatch):
    """Each rank, with its own empty Hub cache, fetches only ranges of the shards."""
    path = llama_checkpoint(cache)
    files = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    shard_bytes = sum(len(b) for n, b in files.items() if n.endswith(".safetensors"))
    with HubServer(FakeRepo(HUB_SPEC.removeprefix("hf://"), files)) as server:
        hub_env(monkeypatch, server, tmp_path / "hf-home")
        ranks = _run("tensor-ranges", path, tmp_path)
        gets = server.gets(".safetensors")
    full = _full_logits(path)
    for report, logits in ranks:
        assert report["same_parameters"] and report["same_logits"], report
        np.testing.assert_allclose(logits, full, rtol=0, atol=1e-4 * np.abs(full).max())
        assert report["shards_downloaded"] == 0
        assert report["bytes_read"] <= report["bytes_fetched"] <= 0.75 * shard_bytes, report
    assert gets and all("range" in r.headers for r in gets)  # no shard was downloaded whole


@pytest.mark.parametrize("split", ["tensor", "pipeline"])
def test_the_distributed_example_generates_on_rank_zero(ring, cache, split):
    """--pipeline: rank 1 left while mlx-lm's extra step still needed it, and rank 0 died
    with '[ring] connection to a peer was lost' after its next-to-last token."""
    script = RANK_SCRIPT.parent.parent / "examples" / "distributed_generate.py"
    path = llama_checkpoint(cache) if split == "tensor" else qwen2_checkpoint(cache)
    extra = ["--pipeline"] if split == "pipeline" else []
    for _ in range(3):
        result = launch_ring(
            script, "--model", str(path), "--max-tokens", "6", *extra, timeout=TIMEOUT
        )
        # The example's mx.distributed.init() isn't strict: when the ring doesn't form (a port
        # taken between our probe and mlx.launch's bind), each rank runs alone as "rank 0/1".
        # That is the harness, not mlxload: launch again. (The likely cause of one failure
        # in about 40 runs, where neither rank printed a "/2]" line; its output wasn't kept.)
        if "[rank 0/1] read " not in result.stderr:
            break
    lines = result.stderr.splitlines()
    for rank in (0, 1):
        found = [x for x in lines if x.startswith(f"[rank {rank}/2] read ")]
        assert len(found) == 1, f"rc {result.returncode}:\n{result.stderr[-3000:]}"
        (line,) = found
        assert "% of the model), peak RSS" in line, line  # (no "fetched": a local model)
    assert result.stdout.strip(), result.stderr[-3000:]  # rank 0's text; rank 1 prints none
    assert "Traceback" not in result.stderr
