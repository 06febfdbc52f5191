"""Read a source checkpoint for the writer: resolve it, read every shard header, check them.

Only headers are read. The result says, for every tensor, which file holds it and at which
absolute offset (straight from the source header, never recomputed from the shape).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mlxload.errors import CheckpointError, DuplicateTensorError
from mlxload.header import FileHeader, TensorInfo, read_header
from mlxload.shards import (
    MODEL_SHARDS,
    CheckpointFiles,
    checkpoint_files,
    require_path,
    visible_files,
)
from mlxload.user_frame import caller_outside_mlxload
from mlxload.writer.errors import (
    MetadataConflictError,
    SourceNotFoundError,
    WriterArgumentError,
)

__all__ = [
    "ON_CONFLICT",
    "Source",
    "check_on_conflict",
    "merge_metadata",
    "open_source",
    "path_argument",
    "resolve_source",
    "same_file",
]

ON_CONFLICT = ("error", "first", "last")
"""How :func:`merge_metadata` treats a key two shards give different values."""


@dataclass
class Source:
    """A source checkpoint: its files, their headers, and where it came from.

    Attributes:
        files: The checkpoint's :class:`~mlxload.shards.CheckpointFiles`.
        headers: One validated header per shard, in ``files.files`` order.
        remote: True when it was resolved from an ``hf://`` (Hub cache) spec.
        path: The local path it was opened from (a file, a directory or an index).
        tensors: Every tensor by name (checked unique across shards).
        shard_of: Tensor name -> the shard file holding it.
    """

    files: CheckpointFiles
    headers: list[FileHeader]
    remote: bool = False
    path: Path | None = None
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    shard_of: dict[str, Path] = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def resolve_source(src: str | os.PathLike, *, progress: bool | None = None) -> tuple[Path, bool]:
    """Turn a path or ``hf://org/repo[@rev]`` spec into a local path.

    Args:
        src: Local file/directory/index, or a Hub spec that ``mlxload.hub.resolve`` understands.
        progress: Show the Hub download's progress bar (``None``: the Hub's default).

    Returns:
        ``(path, remote)``; ``remote`` is True when the Hub resolver supplied the path.

    Raises:
        SourceNotFoundError: no such local path and no Hub resolver (or it found nothing).
    """
    try:
        require_path(src)
    except FileNotFoundError as e:
        raise SourceNotFoundError(str(e)) from None
    spec = os.fspath(src)
    is_hub_spec = isinstance(spec, str) and spec.startswith("hf://")
    if not is_hub_spec and Path(spec).exists():
        return Path(spec), False
    try:
        from mlxload import hub
    except ModuleNotFoundError as e:
        if e.name not in ("mlxload.hub", "huggingface_hub"):
            raise
        if is_hub_spec:
            raise SourceNotFoundError(
                f"{spec}: hf:// sources need mlxload.hub (and huggingface_hub), which this "
                "installation lacks; download the repo and pass its local directory"
            ) from None
        raise SourceNotFoundError(f"{spec}: no such file or directory") from None
    resolved = hub.resolve(spec, progress=progress)
    if resolved is None:
        if Path(spec).exists():
            return Path(spec), False
        raise SourceNotFoundError(f"{spec}: no such file or directory")
    return Path(resolved), True


def path_argument(value: object, what: str, give: str) -> str:
    """``os.fspath(value)``; what is no path at all (``None``) is refused.

    Args:
        value: The argument.
        what: What it is, for the message (``"source"``, ``"output path"``).
        give: What to give instead, for the message.

    Raises:
        WriterArgumentError: ``value`` is not a path.
    """
    try:
        return os.fspath(value)  # type: ignore[arg-type]
    except TypeError:
        raise WriterArgumentError(f"the {what} is {value!r}, not a path; give {give}") from None


def open_source(
    src: str | os.PathLike, *, progress: bool | None = None, as_model: bool = True
) -> Source:
    """Resolve ``src``, read every shard header and check the shards agree with the index.

    ``progress`` is passed to :func:`resolve_source` (the Hub download's progress bar).
    ``as_model``: an unindexed directory is read as loading it as a model reads it (its
    ``model*.safetensors`` when it has any), for a merge or split, whose shards hold tensors
    of several files; else every ``*.safetensors`` (an align keeps each file apart).

    Raises:
        WriterArgumentError: ``src`` is no path.
        SourceNotFoundError: see :func:`resolve_source`.
        DuplicateTensorError: a tensor name stored in two shards.
        CheckpointError: the index and the shards disagree.
        SafetensorsError: a shard header is invalid.
    """
    path_argument(src, "source", "a checkpoint file, directory, index or hf://org/repo")
    path, remote = resolve_source(src, progress=progress)
    try:
        files = checkpoint_files(path, prefer=MODEL_SHARDS if as_model else None)
    except FileNotFoundError as e:
        raise SourceNotFoundError(str(e)) from None
    _warn_left_out(path, files)
    headers = [read_header(f) for f in files.files]
    source = Source(files=files, headers=headers, remote=remote, path=path)
    for header in headers:
        for name, info in header.tensors.items():
            if name in source.tensors:
                raise DuplicateTensorError(
                    f"tensor {name!r} is stored in both {source.shard_of[name]} and "
                    f"{header.path}; a checkpoint may hold each tensor once"
                )
            source.tensors[name] = info
            source.shard_of[name] = header.path
    _check_weight_map(source)
    return source


def _warn_left_out(path: Path, files: CheckpointFiles) -> None:
    """Say which ``*.safetensors`` of an unindexed model directory were not read: an
    ``adapters.safetensors`` beside ``model*.safetensors`` is not part of the model (mlx-lm
    leaves it out too), and written into its shards it would make them unloadable."""
    if files.index_path is not None or not path.is_dir():
        return
    taken = {p.name for p in files.files}
    left = [p.name for p in visible_files(path, "*.safetensors") if p.name not in taken]
    if left:
        warnings.warn(
            f"{path}: read the {MODEL_SHARDS} files, as loading the directory as a model does; "
            f"left out {', '.join(left)} (give a file as its own source to write it)",
            stacklevel=caller_outside_mlxload(),
        )


def _check_weight_map(source: Source) -> None:
    weight_map = source.files.weight_map
    if weight_map is None:
        return
    where = source.shard_of
    resolved: dict[Path, Path] = {}

    def _resolved(path: Path) -> Path:
        if path not in resolved:
            resolved[path] = Path(path).resolve()
        return resolved[path]

    for name, shard in weight_map.items():
        actual = where.get(name)
        if actual is None:
            raise CheckpointError(
                f"{source.files.index_path}: tensor {name!r} is listed in the index under "
                f"{shard.name} but no shard holds it"
            )
        if actual != shard and _resolved(actual) != _resolved(shard):
            raise CheckpointError(
                f"{source.files.index_path}: tensor {name!r} is listed under {shard.name} but "
                f"stored in {Path(actual).name}"
            )
    extra = sorted(set(where) - set(weight_map))
    if extra:
        raise CheckpointError(
            f"{source.files.index_path}: {len(extra)} tensor(s) stored in shards are missing "
            f"from the index, e.g. {extra[0]!r} in {where[extra[0]].name}"
        )


def check_on_conflict(on_conflict: str) -> None:
    """Refuse an ``on_conflict`` not in :data:`ON_CONFLICT`.

    Raises:
        WriterArgumentError: (a ``ValueError`` too) naming the values it takes.
    """
    if on_conflict not in ON_CONFLICT:
        raise WriterArgumentError(
            f"on_conflict must be one of {', '.join(map(repr, ON_CONFLICT))}, got {on_conflict!r}"
        )


def merge_metadata(headers: list[FileHeader], on_conflict: str = "error") -> dict[str, str]:
    """Union of the shards' ``__metadata__``, keys sorted.

    Args:
        headers: Source headers.
        on_conflict: ``"error"`` (default), ``"first"`` (keep the earliest shard's value) or
            ``"last"`` (keep the latest), shards taken in file-name order
            (``model-00001-of-...`` first), with or without an index.

    Returns:
        The merged metadata.

    Raises:
        MetadataConflictError: a key with two different values and ``on_conflict="error"``.
        WriterArgumentError: unknown ``on_conflict``.
    """
    check_on_conflict(on_conflict)
    merged: dict[str, str] = {}
    origin: dict[str, Path] = {}
    # Not the index's order: that follows its weight_map, often sorted by tensor name.
    for header in sorted(headers, key=lambda h: h.path.name):
        for key, value in header.metadata.items():
            if key in merged and merged[key] != value:
                if on_conflict == "error":
                    raise MetadataConflictError(
                        f"__metadata__[{key!r}] is {merged[key]!r} in {origin[key].name} but "
                        f"{value!r} in {header.path.name}; pass on_conflict='first' or 'last' "
                        "(--on-conflict) to choose"
                    )
                if on_conflict == "first":
                    continue
            merged[key] = value
            origin[key] = header.path
    return dict(sorted(merged.items()))


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are the same file or directory (False if either doesn't exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
