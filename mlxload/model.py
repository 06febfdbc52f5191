"""``mlxload.load_model``: an mlx-lm model and tokenizer, with weights read by mlxload.

The model class comes from mlx-lm (an optional dependency, imported only when this runs) for
the checkpoint's ``model_type``; quantized layers are put in place from the checkpoint's
quantization config with the same rule as ``mlx_lm.load``; every tensor is read in one batched
:meth:`mlxload.Checkpoint.materialize` (mapped in place on Metal, copied once elsewhere).

Floating-point parameters are converted to a compute dtype chosen for the backend (see
:mod:`mlxload.backend`): float32 on MLX's CPU backend, where float16 quantized matmuls are
~30x slower; on GPUs each tensor stays as stored, as mlx-lm leaves it. ``model.load_report``
says what happened.

Example:
    >>> model, tokenizer, config = load_model("path/to/mlx-model")  # doctest: +SKIP
    >>> model.load_report.compute_dtype                              # doctest: +SKIP
    'float32'
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlxload.backend import (
    backend,
    convert_floats,
    dtype_name,
    dtype_reason,
    parse_dtype,
    resolve_compute_dtype,
    stored_float_dtype,
)
from mlxload.dtypes import DTYPES
from mlxload.errors import InvalidArgumentError
from mlxload.hub.spec import is_hub_spec
from mlxload.load_report import LoadReport
from mlxload.model_fit import (
    check_fit,
    check_raw_bytes,
    sanitize_weights,
    warn_if_lm_head_ignored,
)
from mlxload.model_quant import class_predicate
from mlxload.model_recipe import (
    REPACKED_METHODS,
    MissingDependencyError,
    ModelLoadError,
    has_tokenizer_files,
    load_tokenizer,
    mlx_lm_utils,
    model_recipe,
    no_tokenizer_message,
)
from mlxload.quantized_load import repack_to_mlx
from mlxload.shards import MODEL_SHARDS
from mlxload.tensor_file import ZERO_COPY, check_zero_copy
from mlxload.user_frame import caller_outside_mlxload

__all__ = ["LoadReport", "MissingDependencyError", "ModelLoadError", "load_model"]


def _load_weights(model: nn.Module, weights: dict[str, mx.array], root: Path) -> None:
    """The last guard after :func:`~mlxload.model_fit.check_fit` (which names the files)."""
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        detail = " ".join(str(e).split())  # mlx's message spans lines
        raise ModelLoadError(
            f"{root}: the checkpoint's tensors don't fit the model: {detail}"
        ) from None


def load_model(
    path_or_hf: str | os.PathLike,
    *,
    dtype: str | mx.Dtype | None = None,
    lazy: bool = False,
    tokenizer_config: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    zero_copy: bool | str = "auto",
    tensor_group: Any = None,
    pipeline_group: Any = None,
    fetch: str = "files",
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Build an mlx-lm model and its tokenizer from a checkpoint, reading weights with mlxload.

    Args:
        path_or_hf: A checkpoint directory, ``hf://org/repo[@rev]`` or ``org/repo``.
        dtype: Compute dtype for floating-point parameters (scales, biases, unquantized
            weights): ``"float32"``, ``"float16"``, ``"bfloat16"`` or an ``mx.Dtype``. ``None``
            picks float32 on the CPU backend, and on GPUs leaves each tensor in the dtype it is
            stored in (as ``mlx_lm.load``: float32 norms beside bfloat16 matrices stay float32).
        lazy: Leave the dtype conversion unevaluated (tensor bytes are still read now).
        tokenizer_config: Extra keyword arguments for the tokenizer (as ``mlx_lm.load``).
        model_config: Values that override ``config.json`` (as ``mlx_lm.load``).
        zero_copy: Passed to :func:`mlxload.load` (``"auto"``: map on Metal, copy elsewhere).
        tensor_group, pipeline_group: An ``mx.distributed`` group: load only this rank's part
            of a tensor- or pipeline-parallel model (see :mod:`mlxload.distributed`; each rank
            reads only the bytes it keeps).
        fetch: With a group and a Hub repo, ``"ranges"`` makes each rank fetch only the bytes
            it reads instead of whole shards (see :func:`mlxload.distributed.load_model_sharded`).

    Returns:
        ``(model, tokenizer, config)``: the mlx-lm model (in eval mode) with a ``load_report``
        attribute (:class:`LoadReport`), mlx-lm's ``TokenizerWrapper``, and the config dict.

    Raises:
        MissingDependencyError: mlx-lm is not installed.
        ModelLoadError: no usable ``config.json`` (unknown ``model_type``, a key the model
            needs), no usable tokenizer files, or tensors that don't match the model (missing,
            extra, wrong shape). Config and tokenizer are checked before any weight is read.
        QuantizationConfigError, QuantizedCheckpointError: a broken quantization config.
        InvalidArgumentError: ``dtype`` is not a float dtype; ``fetch`` is not ``"files"``
            without a group; ``lazy`` or ``zero_copy=True`` with a group.
        CheckpointError, SafetensorsError, HubError: as :func:`mlxload.load`.
    """
    from mlxload.checkpoint import load

    path_or_hf = _directory_of_config(path_or_hf)
    if tensor_group is not None or pipeline_group is not None:
        from mlxload.distributed import load_model_sharded

        if lazy or zero_copy not in ("auto", False):
            raise InvalidArgumentError(
                f"with tensor_group/pipeline_group, lazy must be False and zero_copy 'auto' or "
                f"False (a rank copies just its blocks, evaluated), got lazy={lazy!r}, "
                f"zero_copy={zero_copy!r}"
            )
        return load_model_sharded(
            path_or_hf,
            tensor_group=tensor_group,
            pipeline_group=pipeline_group,
            dtype=dtype,
            tokenizer_config=tokenizer_config,
            model_config=model_config,
            fetch=fetch,
        )
    if fetch != "files":
        raise InvalidArgumentError(
            f"fetch must be 'files' without tensor_group/pipeline_group (a single process "
            f"reads every tensor, so it downloads whole files), got {fetch!r}"
        )
    parse_dtype(dtype)  # fail on a bad dtype or zero_copy before any work (a Hub fetch)
    check_zero_copy(zero_copy)
    utils = mlx_lm_utils()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    path_or_hf = _check_hub_model_first(path_or_hf, model_config)
    # Without an index, mlx-lm reads model*.safetensors only: not an adapter or a consolidated
    # copy in the same folder.
    ckpt = load(path_or_hf, zero_copy=zero_copy, cache=False, prefer=MODEL_SHARDS)
    root = ckpt.root
    try:
        # Model (lazy, no weights yet) and tokenizer come first, so a config.json or tokenizer
        # that mlx-lm can't use fails the load before gigabytes of weights are read.
        recipe = model_recipe(root, model_config)
        config, qconfig = recipe.config, recipe.qconfig
        model = recipe.new_model(ckpt)
        tr = time.perf_counter()
        timings["resolve"] = tr - t0
        tokenizer = load_tokenizer(utils, root, tokenizer_config, config.get("eos_token_id"))
        t1 = time.perf_counter()
        timings["tokenizer"] = t1 - tr
        weights = ckpt.materialize()
        paths = Counter(ckpt.paths.values())
        files = {name: ckpt.file_of(name) for name in weights}
        unindexed = ckpt.unindexed(beside=MODEL_SHARDS)
        raw = {name: (dtype, weights[name]) for name, dtype in _raw_dtypes(ckpt, weights)}
    finally:
        ckpt.close()
    bytes_read = sum(a.nbytes for a in weights.values())
    t2 = time.perf_counter()
    timings["read"] = t2 - t1

    stored = stored_float_dtype(weights)  # (before the repack may convert scales)
    compute = resolve_compute_dtype(dtype)
    repacked = qconfig is not None and qconfig.quant_method in REPACKED_METHODS
    if repacked:  # AWQ/GPTQ -> MLX layout, biases rounded once, to the compute dtype
        if compute is None:  # as mlx-lm converts them: every float tensor in the scales' dtype
            compute = _scales_dtype(weights)
        weights = repack_to_mlx(weights, qconfig, str(root), dtype=compute)
    # Taken before sanitize: some models' sanitize pops lm_head from the dict it is given.
    head, embed = weights.get("lm_head.weight"), weights.get("model.embed_tokens.weight")
    weights = sanitize_weights(model, weights, root)
    warn_if_lm_head_ignored(config, head, embed, weights)
    del head, embed
    nn.quantize(model, class_predicate=class_predicate(qconfig, weights, str(root)))
    quantized = sum(1 for _, m in model.named_modules() if hasattr(m, "bits"))
    model.eval()
    t3 = time.perf_counter()
    timings["build"] = t3 - t2

    check_raw_bytes(model, weights, raw, root)
    check_fit(model, weights, root, files, unindexed, repacked)
    _warn_unread(root, unindexed)
    del raw
    weights = convert_floats(weights, compute)
    _load_weights(model, weights, root)
    del weights
    if not lazy:
        mx.eval(model.parameters())
    t4 = time.perf_counter()
    timings["convert"] = t4 - t3

    timings["total"] = t4 - t0

    n_zero, n_copy = paths.get(ZERO_COPY, 0), sum(paths.values()) - paths.get(ZERO_COPY, 0)
    model.load_report = LoadReport(
        backend=backend(),
        zero_copy="yes" if n_zero and not n_copy else ("partial" if n_zero else "no"),
        paths=dict(paths),
        checkpoint_dtype=dtype_name(stored),
        compute_dtype=dtype_name(compute),
        dtype_reason=dtype_reason(dtype),
        quantized_modules=quantized,
        bytes_read=bytes_read,
        timings=timings,
    )
    return model, tokenizer, config


def _warn_unread(root: Path, unindexed: dict[str, Path]) -> None:
    """Name the tensors a stale index leaves out that the model doesn't need (those it needs
    are an error of :func:`check_fit`): mlx_lm.load, which reads every model*.safetensors,
    would refuse the ones its sanitize keeps."""
    from mlxload.checkpoint import unindexed_note

    if unindexed:
        warnings.warn(
            f"{unindexed_note(root, unindexed)}; they were not read (mlx_lm.load reads every "
            "model*.safetensors and refuses tensors the model has no parameter for)",
            stacklevel=caller_outside_mlxload(),
        )


def _scales_dtype(weights: dict[str, mx.array]) -> mx.Dtype | None:
    """The dtype mlx-lm gives an AWQ/GPTQ model's float tensors: its scales' (the last
    packed layer's, as mlx-lm takes it)."""
    dtype = None
    for name in weights:
        if name.endswith(".qweight"):
            scales = weights.get(f"{name.removesuffix('.qweight')}.scales")
            dtype = scales.dtype if scales is not None else dtype
    return dtype


def _raw_dtypes(ckpt: Any, names: Any) -> list[tuple[str, str]]:
    """``(name, dtype)`` of the tensors read as raw bytes: dtypes MLX has no type for."""
    out = []
    for name in names:
        dtype = ckpt.info(name).dtype
        if DTYPES[dtype].mlx is None:
            out.append((name, dtype))
    return out


def _check_hub_model_first(spec: Any, model_config: dict[str, Any] | None) -> Any:
    """For a Hub repo, fetch its config and tokenizer files first and check them, so that a
    repo mlx-lm can't run (no tokenizer, an unknown model_type) fails before gigabytes of
    weights are downloaded. (Offline, nothing is downloaded anyway.)

    Returns:
        The spec to load: for a Hub repo, pinned to the commit just resolved (the weights
        then come from that commit, and its branch isn't looked up twice).
    """
    if not isinstance(spec, (str, os.PathLike)) or not is_hub_spec(os.fspath(spec)):
        return spec
    from mlxload.hub.offline import offline_mode
    from mlxload.hub.select import TOKENIZER_PATTERNS

    if offline_mode():
        return spec
    from mlxload.hub.cache import COMMIT_RE
    from mlxload.hub.locate import resolve
    from mlxload.hub.spec import parse_spec

    snapshot = resolve(os.fspath(spec), allow_patterns=["*.json", *TOKENIZER_PATTERNS])
    if snapshot is None:
        return spec
    model_recipe(snapshot, model_config)  # config.json: present, a known model_type
    if not has_tokenizer_files(snapshot):
        raise ModelLoadError(no_tokenizer_message(snapshot))
    if not COMMIT_RE.match(snapshot.name):
        return spec
    return f"hf://{parse_spec(os.fspath(spec)).repo_id}@{snapshot.name}"


def _directory_of_config(path_or_hf: Any) -> Any:
    """A local path to a model's ``config.json`` means the model's directory."""
    if isinstance(path_or_hf, (str, os.PathLike)):
        spec = os.fspath(path_or_hf)
        if not is_hub_spec(spec) and Path(spec).name == "config.json" and Path(spec).is_file():
            return Path(spec).parent
    return path_or_hf
