"""In-process tests of per-rank loading: block derivation, tracing mlx-lm's shard(), and whole
loads with a stand-in group (``rank()``/``size()`` only), compared with load_model + shard."""

from __future__ import annotations

import importlib
import json

import mlx.core as mx
import mlx.nn as nn
import pytest
from dist_fixtures import llama_checkpoint, qwen2_checkpoint
from hub_server import FakeRepo, HubServer, hub_env
from mlx.nn.layers.distributed import shard_linear
from mlx.utils import tree_flatten, tree_unflatten

import mlxload
from mlxload.distributed import (
    Block,
    ShardingError,
    derive_block,
    load_model_sharded,
    split_ranges,
)
from mlxload.distributed.tensor_plan import plan_blocks, shard_and_trace
from mlxload.model import load_model
from mlxload.synthetic import synthetic_checkpoint
from mlxload.synthetic.tokenizer import write_tokenizer


class FakeGroup:
    """Enough of ``mx.distributed.Group`` for shard() and pipeline() (no communication)."""

    def __init__(self, rank: int, size: int) -> None:
        self._rank, self._size = rank, size

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("dist-ckpt")


def _params(model) -> dict[str, mx.array]:
    return dict(tree_flatten(model.parameters()))


def _assert_same(model, ref) -> None:
    a, b = _params(model), _params(ref)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert mx.array_equal(a[k], b[k]).item(), k


# -- the split rule --------------------------------------------------------------------------
def test_split_ranges_follow_mlx_split():
    assert split_ranges(8, ranks=2, rank=1) == ((4, 8),)
    assert split_ranges(12, ranks=2, rank=1, segments=3) == ((2, 4), (6, 8), (10, 12))
    assert split_ranges(10, ranks=2, rank=0, segments=[4]) == ((0, 2), (4, 7))
    assert split_ranges(8, ranks=2, rank=1, segments=[0.5]) == ((2, 4), (6, 8))
    with pytest.raises(ValueError, match="doesn't divide into 2"):
        split_ranges(9, ranks=2, rank=0, segments=3)


def test_derive_block_rows_columns_and_whole():
    # A 4-bit, group-64 layer with 256 outputs and 512 inputs: packed (256, 64), scales (256, 8).
    assert derive_block("w", (256, 64), (128, 64), ranks=2, rank=1, rule=(0, 1)) == Block(
        "w", 0, ((128, 256),)
    )
    assert derive_block("s", (256, 8), (256, 4), ranks=2, rank=0, rule=(-1, 1)) == Block(
        "s", 1, ((0, 4),)
    )
    assert derive_block("n", (256,), (256,), ranks=2, rank=0).whole
    # Without the rule the axis comes from the shapes.
    assert derive_block("w", (256, 64), (256, 32), ranks=2, rank=1).ranges == ((32, 64),)


def test_derive_block_errors_name_the_module():
    with pytest.raises(ShardingError, match=r"layers\.0\.mlp\.down_proj \(x\.scales\)"):
        derive_block("x.scales", (256, 3), (256, 1), ranks=2, rank=0, rule=(-1, 1),
                     module="layers.0.mlp.down_proj")  # fmt: skip
    with pytest.raises(ShardingError, match="gives"):
        derive_block("w", (256, 64), (100, 64), ranks=2, rank=0, rule=(0, 1))
    with pytest.raises(ShardingError, match="along one axis"):
        derive_block("w", (256, 64), (128, 32), ranks=2, rank=0)


# -- tracing shard() ------------------------------------------------------------------------
class FusedToy(nn.Module):
    """A fused QKV layer (segments=3) and an output layer whose shard() rescales its bias."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(64, 3 * 32)
        self.out = nn.Linear(32, 64)

    def shard(self, group) -> None:
        self.qkv = shard_linear(self.qkv, "all-to-sharded", segments=3, group=group)
        self.out = shard_linear(self.out, "sharded-to-all", group=group)
        self.out.bias = self.out.bias / group.size()


@pytest.mark.parametrize("rank", [0, 1])
def test_trace_finds_segments_and_derived_parameters(rank):
    model = FusedToy()
    full = _params(model)
    mx.eval(full)
    trace = shard_and_trace(model, FakeGroup(rank, 2))
    plan = plan_blocks(trace, {k: k for k in full}, 2, rank)
    assert plan.derived == {"out.bias": "out.bias"}
    assert len(plan.blocks["qkv.weight"].ranges) == 3  # a piece of each of q, k and v
    for name, block in plan.blocks.items():
        if name in plan.derived:
            continue
        value = full[block.name]
        if not block.whole:
            index = [slice(None)] * value.ndim
            pieces = []
            for a, b in block.ranges:
                index[block.axis] = slice(a, b)
                pieces.append(value[tuple(index)])
            value = mx.concatenate(pieces, axis=block.axis)
        assert mx.array_equal(value, trace.after[name]).item(), name


DIVIDE_IN_PLACE = mx.array.__itruediv__


class InPlaceToy(nn.Module):
    """shard() rescales parameters in place: one it never cut and one ``_shard`` returned."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(64, 32)
        self.down = nn.Linear(32, 64)
        self.norm = nn.RMSNorm(64)

    def shard(self, group) -> None:
        self.up = shard_linear(self.up, "all-to-sharded", group=group)
        self.down = shard_linear(self.down, "sharded-to-all", group=group)
        self.down.bias /= group.size()  # the same array object, changed in place
        self.up.bias *= 2  # an output of _shard, changed afterwards
        self.norm.weight[0] = 1.0


def test_trace_finds_parameters_shard_changed_in_place():
    model = InPlaceToy()
    full = _params(model)
    trace = shard_and_trace(model, FakeGroup(1, 2))
    plan = plan_blocks(trace, {k: k for k in full}, 2, 1)
    assert set(plan.derived) == {"down.bias", "up.bias", "norm.weight"}
    assert plan.blocks["up.weight"] == Block("up.weight", 0, ((16, 32),))
    assert plan.blocks["down.weight"] == Block("down.weight", 1, ((16, 32),))
    assert mx.array.__itruediv__ is DIVIDE_IN_PLACE  # the type is restored afterwards


# -- whole loads with a stand-in group -------------------------------------------------------
@pytest.mark.parametrize("rank", [0, 1])
def test_tensor_parallel_rank_equals_full_load_then_shard(cache, rank):
    path = llama_checkpoint(cache)
    model, _, _ = load_model_sharded(path, tensor_group=FakeGroup(rank, 2), dtype="float32")
    ref, _, _ = load_model(path, dtype="float32")
    ref.shard(FakeGroup(rank, 2))
    _assert_same(model, ref)
    report = model.load_report
    assert report.tensor_rank == rank and report.tensor_size == 2
    assert report.blocks["rows"] > 0 and report.blocks["columns"] > 0
    assert report.fraction_read <= 0.55, report
    # The quantized all-to-sharded q_proj of rank r: its half of the rows, packed and scales.
    q = model.model.layers[0].self_attn.q_proj
    assert q.weight.shape == (128, 32) and q.scales.shape == (128, 4)
    assert report.compute_dtype == "float32" and q.scales.dtype == mx.float32


def test_load_model_with_a_tensor_group_loads_only_this_rank(cache):
    path = llama_checkpoint(cache)
    model, _, _ = mlxload.load_model(path, tensor_group=FakeGroup(1, 2), dtype="float32")
    assert isinstance(model.load_report, mlxload.RankLoadReport)
    ref, _, _ = load_model_sharded(path, tensor_group=FakeGroup(1, 2), dtype="float32")
    _assert_same(model, ref)


def test_indivisible_quantized_input_groups_name_the_module(cache):
    # MLP width 192 = 3 groups of 64: down_proj's input groups can't be halved.
    path = synthetic_checkpoint("tiny", cache_dir=cache, hidden_size=128, intermediate_size=192)
    with pytest.raises(
        ShardingError,
        match=r"model\.layers\.0\.mlp\.down_proj .*\(3 groups of 64, 4-bit\): cut by input "
        r"columns, its 3 input groups can't be shared by 2 ranks \(the group count must divide",
    ):
        load_model_sharded(path, tensor_group=FakeGroup(0, 2))


def test_indivisible_output_rows_name_the_module(cache):
    path = llama_checkpoint(cache)
    with pytest.raises(
        ShardingError,
        match=r"model\.layers\.0\.self_attn\.q_proj across 3 ranks: .*: neither its output "
        "rows nor its input groups divide by 3",
    ):
        load_model_sharded(path, tensor_group=FakeGroup(0, 3))


@pytest.mark.parametrize("rank", [0, 1])
def test_pipeline_rank_opens_only_its_shards(cache, rank):
    path = qwen2_checkpoint(cache)  # embeddings, 4 layer shards, head: 6 files
    model, _, _ = load_model_sharded(path, pipeline_group=FakeGroup(rank, 2), dtype="float32")
    ref, _, _ = load_model(path, dtype="float32")
    ref.model.pipeline(FakeGroup(rank, 2))
    _assert_same(model, ref)
    report = model.load_report
    assert report.layers == ((2, 4) if rank == 0 else (0, 2))  # mlx-lm: rank 0 runs the last
    assert report.shards_opened == 4
    assert report.fraction_read < 0.55


def test_a_pipeline_rank_checks_the_layer_count_against_every_layer(cache, monkeypatch):
    # Checked against only its own layers, the rank running layers 0-1 of a 90-layer model on
    # 45 ranks would refuse num_hidden_layers=90 as more than its names show.
    from mlxload.model_recipe import ModelRecipe

    seen = []
    real = ModelRecipe.new_model

    def recording(self, tensor_names=None):
        seen.append(None if tensor_names is None else list(tensor_names))
        return real(self, tensor_names)

    monkeypatch.setattr(ModelRecipe, "new_model", recording)
    load_model_sharded(qwen2_checkpoint(cache), pipeline_group=FakeGroup(1, 2), dtype="float32")
    assert seen and all(names is not None for names in seen)
    for names in seen:  # rank 1 runs layers 0-1; the check still sees layers 2 and 3
        assert {n.split(".")[2] for n in names if n.startswith("model.layers.")} == set("0123")


def test_pipeline_on_a_model_without_pipeline_is_a_clear_error(cache):
    with pytest.raises(ShardingError, match=r"no model\.pipeline"):
        load_model_sharded(llama_checkpoint(cache), pipeline_group=FakeGroup(0, 2))


def test_pipeline_from_the_hub_downloads_only_this_ranks_shards(cache, tmp_path, monkeypatch):
    path = qwen2_checkpoint(cache)
    files = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with HubServer(FakeRepo("acme/qwen2-pipe", files)) as server:
        hub_env(monkeypatch, server, tmp_path / "home")
        model, _, _ = load_model_sharded(
            "hf://acme/qwen2-pipe", pipeline_group=FakeGroup(1, 2), dtype="float32"
        )
        fetched = {r.path.rsplit("/", 1)[1] for r in server.gets(".safetensors")}
    index = json.loads(files["model.safetensors.index.json"])["weight_map"]
    wanted = {index["model.embed_tokens.weight"], index["lm_head.weight"]}
    wanted |= {index[f"model.layers.{i}.mlp.up_proj.weight"] for i in (0, 1)}
    assert fetched == wanted
    assert model.load_report.shards_downloaded == 4
    ref, _, _ = load_model(path, dtype="float32")
    ref.model.pipeline(FakeGroup(1, 2))
    _assert_same(model, ref)


# -- gpt_oss: shard() divides the experts' down_proj bias in place ----------------------------
GPT_OSS = {
    "model_type": "gpt_oss",
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 512,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "sliding_window": 64,
    "layer_types": ["sliding_attention", "full_attention"],
    "tie_word_embeddings": False,
}


def gpt_oss_checkpoint(cache):
    """A seeded float16 gpt_oss checkpoint (biased experts, attention sinks), one shard."""
    target = cache / "gpt_oss"
    if target.is_dir():
        return target
    module = importlib.import_module("mlx_lm.models.gpt_oss")
    model = module.Model(module.ModelArgs.from_dict(GPT_OSS))
    params = tree_flatten(model.parameters())
    keys = mx.random.split(mx.random.key(3), len(params))
    values = [
        (name, (mx.random.normal(p.shape, key=key) * 0.05).astype(mx.float16))
        for (name, p), key in zip(params, keys, strict=True)
    ]
    model.update(tree_unflatten(values))
    target.mkdir()
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(target / "model.safetensors"), weights, metadata={"format": "mlx"})
    (target / "config.json").write_text(json.dumps(GPT_OSS))
    write_tokenizer(target, 256)
    return target


@pytest.mark.parametrize("rank", [0, 1])
def test_gpt_oss_rank_gets_the_divided_expert_bias(cache, rank):
    path = gpt_oss_checkpoint(cache)
    model, _, _ = load_model_sharded(path, tensor_group=FakeGroup(rank, 2), dtype="float32")
    ref, _, _ = load_model(path, dtype="float32")
    full_bias = mx.array(ref.model.layers[0].mlp.experts.down_proj.bias)
    ref.shard(FakeGroup(rank, 2))
    _assert_same(model, ref)
    bias = model.model.layers[0].mlp.experts.down_proj.bias
    assert mx.array_equal(bias, full_bias / 2).item()
    assert model.load_report.blocks["derived"] == 2 * 2  # per layer: that bias and the sinks


# -- tensor and pipeline parallel together (mlx-lm: shard, then pipeline) ---------------------
@pytest.mark.parametrize("tensor_rank", [0, 1])
@pytest.mark.parametrize("pipeline_rank", [0, 1])
def test_tensor_and_pipeline_groups_equal_full_load_shard_pipeline(
    cache, tensor_rank, pipeline_rank
):
    path = qwen2_checkpoint(cache)
    tensor, pipeline = FakeGroup(tensor_rank, 2), FakeGroup(pipeline_rank, 2)
    model, _, _ = load_model_sharded(
        path, tensor_group=tensor, pipeline_group=pipeline, dtype="float32"
    )
    ref, _, _ = load_model(path, dtype="float32")
    ref.shard(tensor)
    ref.model.pipeline(pipeline)
    _assert_same(model, ref)
    report = model.load_report
    assert report.layers == ((2, 4) if pipeline_rank == 0 else (0, 2))
    assert (report.tensor_rank, report.pipeline_rank) == (tensor_rank, pipeline_rank)
    assert report.shards_opened == 4  # embeddings, its two layers, head
    assert report.fraction_read < 0.3


def test_traces_in_two_threads_at_once_stay_apart():
    """The in-place hooks are process-wide: overlapping traces must not record into each
    other or leave a wrapper behind."""
    import threading
    import time

    original = mx.array.__itruediv__

    class Toy(nn.Module):
        def __init__(self, before: float, after: float):
            super().__init__()
            self.down = nn.Linear(32, 64)
            self.before, self.after = before, after

        def shard(self, group):
            time.sleep(self.before)
            self.down = shard_linear(self.down, "sharded-to-all", group=group)
            self.down.bias /= group.size()
            time.sleep(self.after)

    derived = {}

    def run(tag: str, before: float, after: float, start: float) -> None:
        time.sleep(start)
        model = Toy(before, after)
        names = dict(tree_flatten(model.parameters()))
        trace = shard_and_trace(model, FakeGroup(0, 2))
        derived[tag] = plan_blocks(trace, {k: k for k in names}, 2, 0).derived

    threads = [
        threading.Thread(target=run, args=("a", 0.0, 0.3, 0.0)),
        threading.Thread(target=run, args=("b", 0.3, 0.0, 0.1)),  # enters while a is inside
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert derived == {"a": {"down.bias": "down.bias"}, "b": {"down.bias": "down.bias"}}
    assert mx.array.__itruediv__ is original


class SegmentsToy(nn.Module):
    """A fused projection cut by output rows in segments (as qwen3_5's in_proj_qkvz)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_proj = nn.QuantizedLinear(128, 100, bias=False, group_size=64, bits=4)

    def shard(self, group) -> None:
        self.in_proj = shard_linear(self.in_proj, "all-to-sharded", segments=[33, 66], group=group)


def test_a_failed_split_whose_shape_divides_blames_the_models_rule_not_a_cut():
    with pytest.raises(ShardingError) as e:
        shard_and_trace(SegmentsToy(), FakeGroup(0, 2))
    message = str(e.value)
    assert message.startswith(
        "can't shard in_proj across 2 ranks: QuantizedLinear with 100 outputs and 128 inputs "
        "(2 groups of 64, 4-bit): the model's split of it across 2 ranks failed ("
    ), message
    assert "cut by" not in message


def test_a_rank_that_fails_shows_its_own_error_even_if_telling_the_others_fails(
    tmp_path, monkeypatch
):
    """The all_sum that tells the other ranks runs in the failure path: if it raised too (a
    broken group), its error replaced the rank's own."""

    def broken(*args, **kwargs):
        raise RuntimeError("[ring] connection reset")

    monkeypatch.setattr(mx.distributed, "all_sum", broken)
    group = mx.distributed.init()  # one process: a real group of size 1
    with pytest.raises(mlxload.CheckpointNotFoundError, match="no such file or directory"):
        load_model_sharded(tmp_path / "missing", tensor_group=group)


def test_a_relative_model_path_loads_as_the_absolute_one(cache, monkeypatch):
    """Shard paths built on a relative root met the absolute ones of the opened files: every
    rank failed with 'tensor ... is stored in both model-00001... and model-00001...'."""
    path = llama_checkpoint(cache)
    monkeypatch.chdir(path.parent)
    model, _, _ = load_model_sharded(path.name, tensor_group=FakeGroup(1, 2), dtype="float32")
    ref, _, _ = load_model_sharded(path, tensor_group=FakeGroup(1, 2), dtype="float32")
    _assert_same(model, ref)


def test_a_pipeline_of_more_ranks_than_layers_is_a_sharding_error(cache):
    path = qwen2_checkpoint(cache)  # 4 layers
    with pytest.raises(
        ShardingError, match="the model has 4 layers: it can't be split across 5 pipeline ranks"
    ):
        load_model_sharded(path, pipeline_group=FakeGroup(0, 5))


def test_any_refusal_of_the_architectures_own_shard_is_a_sharding_error(cache):
    """gpt_oss on 4 ranks divides by zero in its shard(): that escaped as ZeroDivisionError."""
    with pytest.raises(ShardingError, match=r"can't shard model\.layers\.0 across 4 ranks"):
        load_model_sharded(gpt_oss_checkpoint(cache), tensor_group=FakeGroup(0, 4))


def test_a_failure_anywhere_in_a_grid_of_groups_reaches_every_rank(monkeypatch):
    """Tensor groups {0,1},{2,3} and pipeline groups {0,2},{1,3}: one all-sum per group carried
    rank 0's failure to ranks 1 and 2 only, and rank 3 then waited for rank 2 for ever. The
    collective is simulated (the ring backend can't split groups): an all-sum that blocks
    until every member of its group has given its value."""
    import threading
    import types

    import mlxload.distributed.api as api

    class SubGroup:
        def __init__(self, members, me):
            self.members, self.me = tuple(members), me

    pending: dict = {}
    lock = threading.Condition()

    def all_sum(x, group=None):
        with lock:
            slot = pending.setdefault(group.members, {"values": {}, "read": set()})
            slot["values"][group.me] = int(x.item())
            lock.notify_all()
            lock.wait_for(lambda: len(slot["values"]) == len(group.members), timeout=10)
            total = sum(slot["values"].values())
            slot["read"].add(group.me)
            if len(slot["read"]) == len(group.members):
                del pending[group.members]
        return mx.array(total)

    shim = types.SimpleNamespace(Group=SubGroup, all_sum=all_sum)
    monkeypatch.setattr(api, "mx", types.SimpleNamespace(distributed=shim, array=mx.array,
                                                         int32=mx.int32))  # fmt: skip
    seen = {}

    def rank(r):
        groups = [SubGroup([0, 1] if r < 2 else [2, 3], r), SubGroup([r % 2, r % 2 + 2], r)]
        seen[r] = api._failed_ranks(groups, failed=r == 0)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(seen) == 4 and all(seen[r] > 0 for r in range(4)), seen
