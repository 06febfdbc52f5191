"""Run mlx-lm's own ``model.shard(group)`` on a lazy skeleton and see what each parameter became.

The model's ``shard`` decides which layers are split and how ("all-to-sharded" /
"sharded-to-all", fused segments); every split goes through
``mlx.nn.layers.distributed._shard``, whose sharding predicate states the axis and segments.
While ``shard`` runs, :func:`shard_and_trace` wraps that function to note, per array, the rule
it applied, and which output array came from which input. Afterwards each parameter is:

* untouched (the same array object): read whole;
* the output of ``_shard``: read the block its rule and shapes give (:mod:`.blocks`);
* anything else (the model's ``shard`` computed it itself, e.g. ``w = w[...]``, or changed it
  in place, e.g. ``bias /= N``): "derived", read whole and let ``shard`` compute it again from
  the real values.

An in-place operator keeps the Python object but gives it a new value, so object identity
alone can't tell "untouched" from "changed in place": while ``shard`` runs, ``mx.array``'s
in-place operators (``+=``, ``/=``, ``a[i] = v``, ...) are wrapped to note which arrays they
change, and those count as derived however they were made.

Nothing is evaluated: the skeleton's arrays are lazy and are replaced by what is read.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlxload.distributed.blocks import Block, derive_block
from mlxload.distributed.errors import ShardingError

__all__ = ["ShardTrace", "TensorPlan", "plan_blocks", "shard_and_trace"]


@dataclass
class ShardTrace:
    """What ``model.shard(group)`` did to the skeleton.

    Attributes:
        before: Parameter name -> array before sharding.
        after: Parameter name -> array after sharding.
        rules: ``id(input array)`` -> what the sharding predicate returned for it.
        origin: ``id(output array)`` -> ``id(input array)`` for every array ``_shard`` made.
        changed: ``id(array)`` -> array, for every array an in-place operator changed (held so
            the ids stay unique).
    """

    before: dict[str, mx.array]
    after: dict[str, mx.array] = field(default_factory=dict)
    rules: dict[int, Any] = field(default_factory=dict)
    origin: dict[int, int] = field(default_factory=dict)
    changed: dict[int, mx.array] = field(default_factory=dict)


@dataclass
class TensorPlan:
    """Per parameter of the sharded model, what to read.

    Attributes:
        blocks: Parameter name -> :class:`Block` of its checkpoint tensor.
        derived: Parameters ``shard`` computed from others (see module doc); their sources
            must be put into a fresh skeleton before ``shard`` runs again.
    """

    blocks: dict[str, Block]
    derived: dict[str, str]


IN_PLACE = (
    "__iadd__",
    "__isub__",
    "__imul__",
    "__imatmul__",
    "__itruediv__",
    "__ifloordiv__",
    "__imod__",
    "__ipow__",
    "__ilshift__",
    "__irshift__",
    "__iand__",
    "__ixor__",
    "__ior__",
    "__setitem__",
)
"""The ``mx.array`` methods that change an array's value without making a new object."""


def _noting(method: Callable, changed: dict[int, mx.array]) -> Callable:
    def wrapper(self: mx.array, *args: Any) -> Any:
        changed[id(self)] = self
        return method(self, *args)

    return wrapper


@contextmanager
def _note_in_place(changed: dict[int, mx.array]) -> Iterator[None]:
    """Within the block, record in ``changed`` every ``mx.array`` changed in place."""
    originals = {n: getattr(mx.array, n) for n in IN_PLACE if hasattr(mx.array, n)}
    try:
        for name, method in originals.items():
            setattr(mx.array, name, _noting(method, changed))
        yield
    finally:
        for name, method in originals.items():
            setattr(mx.array, name, method)


def _module_paths(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    # Holding the modules keeps their ids from being reused by the layers shard() creates.
    return {id(m): (path or "<model>", m) for path, m in model.named_modules()}


def _module_in_traceback(
    tb: Any, paths: dict[int, tuple[str, nn.Module]]
) -> tuple[str, nn.Module] | None:
    found = None
    while tb is not None:  # the innermost frame holding a known module is the one being cut
        for value in tb.tb_frame.f_locals.values():
            known = paths.get(id(value))
            if known is not None and known[1] is value:
                found = known
        tb = tb.tb_next
    return found


def _describe(module: nn.Module, ranks: int) -> str:
    weight = getattr(module, "weight", None)
    shape = tuple(weight.shape) if isinstance(weight, mx.array) else None
    bits = getattr(module, "bits", None)
    if bits and shape:
        in_dims = shape[-1] * 32 // bits
        groups = in_dims // module.group_size
        what = (
            f"{type(module).__name__} with {shape[0]} outputs and {in_dims} inputs "
            f"({groups} group{'s' * (groups != 1)} of {module.group_size}, {bits}-bit): "
        )
        rows_divide, groups_divide = shape[0] % ranks == 0, groups % ranks == 0
        if rows_divide and groups_divide:  # the model's own split rule failed: MLX says why
            return what + f"the model's split of it across {ranks} ranks failed"
        if rows_divide:  # then the cut that failed was by input columns
            return what + (
                f"cut by input columns, its {groups} input group{'s' * (groups != 1)} can't be "
                f"shared by {ranks} ranks (the group count must divide by {ranks})"
            )
        if groups_divide:
            return what + (
                f"cut by output rows, its {shape[0]} rows can't be shared by {ranks} ranks"
            )
        return what + f"neither its output rows nor its input groups divide by {ranks}"
    if shape:
        name = type(module).__name__
        return f"{name} with weight shape {shape}: the cut axis must divide by {ranks}"
    return type(module).__name__


def shard_and_trace(model: nn.Module, group: Any) -> ShardTrace:
    """Call ``model.shard(group)`` (in place) and record what happened to each parameter.

    Args:
        model: A lazy skeleton (see :mod:`.skeleton`), quantized like the checkpoint.
        group: An ``mx.distributed.Group`` or anything with ``rank()`` and ``size()``.

    Returns:
        The :class:`ShardTrace`.

    Raises:
        ShardingError: the model has no ``shard``, or a module can't be split across the
            group (named, with its sizes).
    """
    if not hasattr(model, "shard"):
        raise ShardingError(
            f"{type(model).__module__} has no shard(group): mlx-lm doesn't support tensor "
            "parallelism for this architecture"
        )
    import mlx.nn.layers.distributed as dist

    trace = ShardTrace(before=dict(tree_flatten(model.parameters())))
    paths = _module_paths(model)
    original: Callable = dist._shard

    def traced(parameters: dict, predicate: Callable, group: Any = None) -> dict:
        def noting(path: str, weight: Any) -> Any:
            rule = predicate(path, weight)
            if isinstance(weight, mx.array):
                trace.rules[id(weight)] = rule
            return rule

        result = original(parameters, noting, group)
        inputs = dict(tree_flatten(parameters))
        for path, out in tree_flatten(result):
            if path in inputs:
                trace.origin[id(out)] = id(inputs[path])
        return result

    # Both hooks are process-wide: two traces at once would record into each other and
    # restore each other's wrappers, so one shard() is traced at a time.
    with _TRACE_LOCK:
        _shard_traced(model, group, dist, traced, original, trace, paths)
    trace.after = dict(tree_flatten(model.parameters()))
    return trace


_TRACE_LOCK = threading.Lock()


def _shard_traced(
    model: nn.Module,
    group: Any,
    dist: Any,
    traced: Callable,
    original: Callable,
    trace: ShardTrace,
    paths: dict[int, tuple[str, nn.Module]],
) -> None:
    dist._shard = traced
    try:
        with _note_in_place(trace.changed):
            model.shard(group)
    except (ValueError, RuntimeError, AssertionError, ZeroDivisionError, IndexError) as e:
        # (The architecture's own shard(): a dimension that won't divide shows as any of these.)
        where = _module_in_traceback(sys.exc_info()[2], paths)
        if where is None:
            raise ShardingError(f"{type(model).__module__}.shard failed: {e}") from e
        path, module = where
        raise ShardingError(
            f"can't shard {path} across {group.size()} ranks: {_describe(module, group.size())} "
            f"({e})"
        ) from None
    finally:
        dist._shard = original


def plan_blocks(
    trace: ShardTrace,
    sources: dict[str, str],
    ranks: int,
    rank: int,
    keep: Iterable[str] | None = None,
) -> TensorPlan:
    """Which block of which checkpoint tensor each parameter of the sharded model needs.

    Args:
        trace: From :func:`shard_and_trace`.
        sources: Parameter name (before sharding) -> checkpoint tensor name.
        ranks, rank: Group size and this rank.
        keep: The parameters to plan (default: all of the sharded model), e.g. those a
            pipeline stage keeps after ``model.model.pipeline``.

    Raises:
        ShardingError: a parameter with no checkpoint source, or shapes that don't match the
            rule ``shard`` applied.
    """
    name_of = {id(a): n for n, a in trace.before.items()}
    blocks: dict[str, Block] = {}
    derived: dict[str, str] = {}
    for name in trace.after if keep is None else keep:
        arr = trace.after[name]
        src = name_of.get(_source_id(trace, name, arr))
        if src is None:
            if name not in sources:
                raise ShardingError(f"{name}: shard created a parameter the checkpoint lacks")
            derived[name] = sources[name]
            blocks[name] = Block(sources[name])
            continue
        if src not in sources:
            raise ShardingError(f"{src}: the checkpoint has no tensor for this parameter")
        blocks[name] = _block(trace, src, arr, sources[src], ranks, rank)
    return TensorPlan(blocks, derived)


def _source_id(trace: ShardTrace, name: str, arr: mx.array) -> int | None:
    # None: shard() computed the value itself (a new array, or one changed in place).
    if id(arr) in trace.changed:
        return None
    src_id = trace.origin.get(id(arr))
    if src_id is None and trace.before.get(name) is arr:
        src_id = id(arr)
    return src_id


def _block(trace: ShardTrace, src: str, arr: mx.array, tensor: str, ranks: int, rank: int) -> Block:
    before = trace.before[src]
    if before is arr:
        return Block(tensor)
    return derive_block(
        tensor,
        before.shape,
        arr.shape,
        ranks=ranks,
        rank=rank,
        rule=trace.rules.get(id(before)),
        module=src.rsplit(".", 1)[0],
    )
