"""``load_model_sharded``: each rank of an MLX distributed job reads only what it keeps.

Steps, per rank:

1. Read ``config.json`` and pick mlx-lm's model class (as :func:`mlxload.load_model`).
2. Pipeline parallel: run mlx-lm's ``model.model.pipeline(group)`` on a throwaway lazy model
   to learn this rank's layers, so only the shards holding them are opened (downloaded).
3. Build a lazy skeleton quantized like the checkpoint (tensor shapes from shard headers).
4. Tensor parallel: run mlx-lm's own ``model.shard(group)`` on the skeleton, then (with a
   pipeline group too, as mlx-lm's ``sharded_load``) ``model.model.pipeline(group)``, and
   derive, per parameter this rank keeps, the block of its checkpoint tensor it reads
   (:mod:`.tensor_plan`).
5. Read exactly those blocks, convert floats to the compute dtype, load them, evaluate.

The result equals loading the whole model and calling ``model.shard(group)`` /
``model.model.pipeline(group)``, parameter for parameter.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from mlxload.backend import (
    backend,
    convert_floats,
    dtype_name,
    dtype_reason,
    parse_dtype,
    resolve_compute_dtype,
    stored_float_dtype,
)
from mlxload.distributed.blocks import Block
from mlxload.distributed.pipeline import pipeline_range, tensors_for_layers
from mlxload.distributed.reader import read_blocks
from mlxload.distributed.report import RankLoadReport
from mlxload.distributed.skeleton import (
    ModelRecipe,
    build_skeleton,
    model_recipe,
    placeholders,
    sanitized_sources,
)
from mlxload.distributed.source import RankSource, open_source
from mlxload.distributed.tensor_plan import plan_blocks, shard_and_trace
from mlxload.errors import InvalidArgumentError
from mlxload.model_fit import refuse_unknown
from mlxload.model_recipe import ModelLoadError, load_tokenizer
from mlxload.process_stats import io_read_bytes, peak_rss_bytes

__all__ = ["load_model_sharded"]


def _kind(block: Block, ndim: int) -> str:
    if block.whole:
        return "whole"
    if block.axis == 0:
        return "rows"
    return "columns" if block.axis == ndim - 1 else "sliced"


def _rebuild_with_derived(
    recipe: ModelRecipe,
    stand_ins: dict[str, mx.array],
    sources: dict[str, str],
    derived: dict[str, mx.array],
    tensor_group: Any,
    pipeline_group: Any,
) -> nn.Module:
    # Parameters that the model's shard() computes itself (bias /= N, manual slices) get their
    # real values before shard() runs, so it computes them exactly as on a full load.
    model = build_skeleton(recipe, stand_ins, sources)
    model.update(tree_unflatten(list(derived.items())))
    model.shard(tensor_group)
    if pipeline_group is not None:
        model.model.pipeline(pipeline_group)
    return model


def load_model_sharded(
    path_or_hf: str | os.PathLike,
    *,
    tensor_group: Any = None,
    pipeline_group: Any = None,
    dtype: str | mx.Dtype | None = None,
    tokenizer_config: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    fetch: str = "files",
    **hub_kwargs: Any,
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Load this rank's part of a model for MLX tensor and/or pipeline parallelism.

    Args:
        path_or_hf: A checkpoint directory, ``hf://org/repo[@rev]`` or ``org/repo``.
        tensor_group: ``mx.distributed.Group`` to split layers across (mlx-lm's
            ``model.shard``), or ``None``.
        pipeline_group: Group to split decoder layers across (mlx-lm's
            ``model.model.pipeline``), or ``None``. With neither group,
            ``mx.distributed.init()`` is the tensor group (as mlx-lm's ``sharded_load``).
        dtype: Compute dtype for float parameters (``None``: float32 on CPU, else stored).
        tokenizer_config: Extra tokenizer arguments (as ``mlx_lm.load``).
        model_config: Values overriding ``config.json``.
        fetch: For Hub repos: ``"files"`` downloads the shards this rank needs, whole, into the
            Hub cache (verified against the Hub's sha256); ``"ranges"`` fetches only the bytes
            this rank reads, with HTTP Range requests, into temporary files (a shard is
            verified only when its ranges add up to all of it: the Hub lists no per-range
            hashes). Shards already in the cache are read from there either way.
        **hub_kwargs: For Hub repos, passed to :func:`mlxload.hub.download`.

    Returns:
        ``(model, tokenizer, config)``; ``model.load_report`` is a :class:`RankLoadReport`.

    Raises:
        ShardingError: the model can't be split as asked (names the module).
        ModelLoadError, MissingDependencyError: as :func:`mlxload.load_model`; also on every
            other rank when one rank fails (all ranks agree with one all-sum at the end).
        InvalidArgumentError: a bad ``dtype`` or ``fetch``.
        CheckpointError, SafetensorsError, HubError: as :func:`mlxload.load`.
    """
    from mlxload.model_recipe import mlx_lm_utils

    if fetch not in ("files", "ranges"):
        raise InvalidArgumentError(f"fetch must be 'files' or 'ranges', got {fetch!r}")
    parse_dtype(dtype)
    utils = mlx_lm_utils()  # imported before the clocks start: its .py files aren't checkpoint I/O
    if tensor_group is None and pipeline_group is None:
        tensor_group = mx.distributed.init()
    t0, io0 = time.perf_counter(), io_read_bytes()

    groups = [g for g in (tensor_group, pipeline_group) if g is not None]
    try:
        source = open_source(path_or_hf, fetch=fetch, **hub_kwargs)
        try:
            loaded = _load_rank(source, utils, tensor_group, pipeline_group, dtype,
                                tokenizer_config, model_config, t0, io0)  # fmt: skip
        finally:
            source.close()
    except Exception:
        # Tell the other ranks; if even that fails (a broken group), this rank's own error
        # is the one to see, not the collective's.
        with contextlib.suppress(Exception):
            _failed_ranks(groups, failed=True)
        raise
    if _failed_ranks(groups, failed=False):
        raise ModelLoadError(
            f"{path_or_hf}: another rank failed to load its part (its own error says why); "
            "this rank stops too instead of waiting for it in the model's first collective"
        )
    return loaded


def _failed_ranks(groups: list[Any], failed: bool) -> int:
    """Nonzero when any rank of ``groups`` failed to load, this one included.

    A refusal can depend on the rank (a pipeline stage's layers, a block that won't split):
    without this, the ranks that loaded would wait for the failed one for ever.
    """
    real = [g for g in groups if isinstance(g, mx.distributed.Group)]  # (not a stand-in)
    # One all-sum per group carries the news one hop only: with a tensor and a pipeline group
    # (a grid), a failure in another row and column reached neither of this rank's groups.
    # So every group sums what the previous sums told it, and the first group once more.
    rounds = real + real[:1] if len(real) > 1 else real
    total = int(failed)
    for group in rounds:
        count = mx.distributed.all_sum(mx.array(total, dtype=mx.int32), group=group)
        total = int(count.item())
    return total


def _load_rank(
    source: RankSource,
    utils: Any,
    tensor_group: Any,
    pipeline_group: Any,
    dtype: str | mx.Dtype | None,
    tokenizer_config: dict[str, Any] | None,
    model_config: dict[str, Any] | None,
    t0: float,
    io0: int | None,
) -> tuple[nn.Module, Any, dict[str, Any]]:
    timings: dict[str, float] = {}
    recipe = model_recipe(source.root, model_config, repack=False)
    layers_total = recipe.config.get("num_hidden_layers", 0)
    layers = (0, layers_total)
    names = all_names = source.tensor_names()
    if pipeline_group is not None:
        start, stop, layers_total = pipeline_range(recipe, pipeline_group, names)
        layers = (start, stop)
        if names is not None:
            names = tensors_for_layers(names, start, stop)
    ckpt = source.open(names)
    t1 = time.perf_counter()
    timings["resolve"] = t1 - t0

    try:
        if names is None:
            names = all_names = list(ckpt)
        stand_ins = placeholders(ckpt, names)
        model = recipe.new_model(all_names)  # every rank checks against the whole model
        sources = sanitized_sources(model, stand_ins, recipe.root)
        model = build_skeleton(recipe, stand_ins, sources, model)
        # A tensor fitting no parameter is refused, as load_model and mlx-lm refuse it (the
        # reads below would just leave it out). Checked before shard(): all of the model.
        params = {p for p, _ in tree_flatten(model.parameters())}
        refuse_unknown([n for n in sources if n not in params], source.root)
        derived: dict[str, str] = {}
        trace = shard_and_trace(model, tensor_group) if tensor_group is not None else None
        if pipeline_group is not None:  # after shard(), as mlx-lm's sharded_load
            model.model.pipeline(pipeline_group)
        kept = [p for p, _ in tree_flatten(model.parameters())]
        if trace is not None:
            # Only this stage's layers: the others' tensors weren't opened.
            size, rank = tensor_group.size(), tensor_group.rank()
            plan = plan_blocks(trace, sources, size, rank, keep=kept)
            blocks, derived = plan.blocks, plan.derived
            del trace
        else:
            blocks = {p: Block(sources[p]) for p in kept if p in sources}
        missing = [p for p in kept if p not in blocks]
        if missing:
            raise ModelLoadError(
                f"{source.root}: no checkpoint tensor for {len(missing)} parameter(s) of this "
                f"rank: {', '.join(missing[:5])}"
            )
        blocks = {p: blocks[p] for p in kept}
        t2 = time.perf_counter()
        timings["plan"] = t2 - t1

        ckpt = source.fetch_blocks(ckpt, blocks)  # fetch="ranges": just those bytes, now
        arrays, bytes_read = read_blocks(ckpt, blocks)
        kinds = Counter(_kind(blocks[p], len(ckpt.info(blocks[p].name).shape)) for p in blocks)
        checkpoint_bytes = int(ckpt.index_metadata.get("total_size") or 0) or sum(
            ckpt.info(n).nbytes for n in ckpt
        )
        shards_opened = len(ckpt.files)
    finally:
        ckpt.close()
    t3 = time.perf_counter()
    timings["read"] = t3 - t2

    stored = stored_float_dtype(arrays)
    compute = resolve_compute_dtype(dtype)
    arrays = convert_floats(arrays, compute)
    derived_kept = {p: arrays.pop(p) for p in derived if p in arrays}
    if derived_kept:
        model = _rebuild_with_derived(
            recipe, stand_ins, sources, derived_kept, tensor_group, pipeline_group
        )
        kinds["derived"] = len(derived_kept)
        kinds["whole"] -= len(derived_kept)
    try:
        model.load_weights(list(arrays.items()), strict=not derived_kept)
    except ValueError as e:
        raise ModelLoadError(
            f"{source.root}: this rank's tensors don't fit the model: {e}"
        ) from None
    del arrays
    mx.eval(model.parameters())
    t4 = time.perf_counter()
    timings["convert"] = t4 - t3

    tokenizer = load_tokenizer(
        utils, source.root, tokenizer_config, eos_token_ids=recipe.config.get("eos_token_id")
    )
    t5 = time.perf_counter()
    timings["tokenizer"] = t5 - t4
    timings["total"] = t5 - t0

    io1 = io_read_bytes()
    tensor = (tensor_group.rank(), tensor_group.size()) if tensor_group is not None else (0, 1)
    pipe = (pipeline_group.rank(), pipeline_group.size()) if pipeline_group is not None else (0, 1)
    model.load_report = RankLoadReport(
        backend=backend(),
        zero_copy="no",
        paths={"copy": len({b.name for b in blocks.values()})},
        checkpoint_dtype=dtype_name(stored),
        compute_dtype=dtype_name(compute),
        dtype_reason=dtype_reason(dtype),
        quantized_modules=sum(1 for _, m in model.named_modules() if hasattr(m, "bits")),
        bytes_read=bytes_read,
        timings=timings,
        rank=tensor[0] if tensor_group is not None else pipe[0],
        tensor_rank=tensor[0],
        tensor_size=tensor[1],
        pipeline_rank=pipe[0],
        pipeline_size=pipe[1],
        layers=layers,
        checkpoint_bytes=checkpoint_bytes,
        shards_opened=shards_opened,
        shards_downloaded=len(source.downloaded),
        bytes_fetched=source.fetched_bytes,
        io_bytes=None if io0 is None or io1 is None else io1 - io0,
        peak_rss_bytes=peak_rss_bytes(),
        blocks=dict(kinds),
    )
    return model, tokenizer, recipe.config
