"""The public writer functions: :func:`merge`, :func:`split`, :func:`align`.

All three read only the source headers to plan, then stream tensor bytes file-to-file into
aligned outputs (see :mod:`mlxload.writer.execute`): bounded memory, atomic, resumable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mlxload.errors import CheckpointError
from mlxload.hub.cache import in_hf_cache
from mlxload.hub.spec import is_hub_spec
from mlxload.shards import MODEL_SHARDS, checkpoint_files
from mlxload.writer.companions import copy_companions
from mlxload.writer.errors import WriterArgumentError, WriterError
from mlxload.writer.execute import Progress, WriteResult, execute
from mlxload.writer.plan import (
    names_directory,
    plan_align,
    plan_merge,
    plan_split,
    require_directory,
    require_directory_name,
    require_safetensors_name,
)
from mlxload.writer.sizes import parse_size
from mlxload.writer.sources import check_on_conflict, open_source, path_argument

__all__ = ["align", "merge", "split"]


def merge(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    force: bool = False,
    on_conflict: str = "error",
    progress: Progress | None = None,
    download_progress: bool | None = None,
) -> WriteResult:
    """Merge a checkpoint's shards into one aligned safetensors file.

    Args:
        src: A ``.safetensors`` file, a directory, an index, or ``hf://org/repo[@rev]``.
        out: The output file (an existing directory, or a path ending with ``/``, gets
            ``model.safetensors`` inside, and, when ``src`` is a whole model, its
            ``config.json``, tokenizer and other companion files, as :func:`split` does).
        force: Replace ``out`` if it exists.
        on_conflict: Shards disagreeing on a ``__metadata__`` key: ``"error"``, ``"first"``,
            ``"last"``.
        progress: ``progress(done_bytes, total_bytes, tensor_name)`` after each tensor.
        download_progress: For an ``hf://`` source, show the Hub download's progress bar
            (``None``: the Hub's default).

    Returns:
        A :class:`~mlxload.writer.execute.WriteResult`.

    Raises:
        OutputExistsError, InsufficientSpaceError, WriteFailedError, MetadataConflictError,
        SourceNotFoundError, CheckpointError, SafetensorsError: see their docs.
        OutputNotADirectoryError: the directory ``out`` would go in is a file.
        WriterArgumentError: ``out`` is empty or not a path, or ``on_conflict`` is unknown.
    """
    _require_named(out)
    check_on_conflict(on_conflict)  # before a Hub download
    into_dir = names_directory(out)
    out = Path(out)
    if into_dir:
        out = out / "model.safetensors"
    require_safetensors_name(out)  # existing ones too: --force must not turn config.json into one
    require_directory(out.parent)  # before a Hub download
    source = open_source(src, progress=download_progress)
    plan = plan_merge(source, out, on_conflict=on_conflict)
    companions = into_dir and _whole_model(src, source)  # a model directory: loadable as it is
    return execute(
        plan,
        force=force,
        progress=progress,
        finish=_companions(source, out.parent, force) if companions else None,
    )


def split(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_shard_size: int | str = "5GB",
    force: bool = False,
    on_conflict: str = "error",
    progress: Progress | None = None,
    download_progress: bool | None = None,
) -> WriteResult:
    """Split a checkpoint into aligned shards of at most ``max_shard_size`` plus an index.

    Shards are named ``model-0000i-of-0000N.safetensors`` (``model.safetensors`` when one
    suffices) and ``model.safetensors.index.json`` lists them, as mlx-lm and transformers do.
    The source model's ``config.json``, tokenizer and other companion files are copied along
    (never over an existing file), so the output loads as a model: for a directory, an index,
    a Hub repo, or a file that is its directory's only weights file beside a ``config.json``.

    Args:
        src: A ``.safetensors`` file, a directory, an index, or ``hf://org/repo[@rev]``.
        out_dir: Output directory (created if missing).
        max_shard_size: Bytes per shard file, header included: an int or ``"5GB"``,
            ``"500MB"``, ``"1.5GiB"``; more than 16 KiB (a shard's header page). A tensor
            too large to fit under it even alone gets a (larger) shard of its own.
        force: Replace existing shards and index.
        on_conflict: As for :func:`merge`.
        progress, download_progress: As for :func:`merge`.

    Returns:
        A :class:`~mlxload.writer.execute.WriteResult`.

    Raises:
        InvalidSizeError: bad ``max_shard_size``.
        OutputNotADirectoryError: ``out_dir`` is a file, or is named like one
            (``x.safetensors``) and is no directory yet; and the errors of :func:`merge`.
    """
    limit = parse_size(max_shard_size)
    _require_named(out_dir)
    check_on_conflict(on_conflict)
    if not (isinstance(out_dir, str) and out_dir.endswith(("/", os.sep))):  # "x.safetensors/"
        require_directory_name(Path(out_dir), "split writes a directory (its shards and an index)")
    require_directory(Path(out_dir))  # before a Hub download
    source = open_source(src, progress=download_progress)
    plan = plan_split(source, Path(out_dir), limit, on_conflict=on_conflict)
    companions = _companions(source, Path(out_dir), force) if _whole_model(src, source) else None
    return execute(plan, force=force, progress=progress, finish=companions)


def _companions(source, out_dir: Path, force: bool) -> Callable[[], list[Path]]:
    """The step copying ``source``'s config and tokenizer beside the written shards."""
    return lambda: copy_companions(source.files.root, out_dir, replace=force)


def _one_file(src: str | os.PathLike, source) -> bool:
    return not source.remote and source.files.index_path is None and not Path(src).is_dir()


def _whole_model(src: str | os.PathLike, source) -> bool:
    """Whether ``src`` names a model (a directory, an index, a Hub repo, or the one weights
    file of a model directory) rather than a file among others, whose neighbours (a
    ``config.json`` that isn't its own) are not ours to copy."""
    if not _one_file(src, source):
        return True
    file = Path(src)
    if not (file.parent / "config.json").is_file():
        return False
    try:  # what loading the directory as a model (mlx-lm's glob) would read
        model = checkpoint_files(file.parent, prefer=MODEL_SHARDS)
    except (CheckpointError, OSError):
        return False
    return model.index_path is None and [f.resolve() for f in model.files] == [file.resolve()]


def align(
    src: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    download_progress: bool | None = None,
) -> WriteResult:
    """Rewrite a checkpoint so every tensor is naturally aligned (zero-copy ready).

    Shard boundaries, tensor bytes and ``__metadata__`` are kept; the header is padded so the
    data section starts on a 16 KiB boundary and tensors are ordered by descending alignment.

    Args:
        src: A ``.safetensors`` file, a directory, an index, or ``hf://org/repo[@rev]``.
        out: Where to write: for a ``src`` that is one ``.safetensors`` file, a file path or
            a directory (one that exists or ends with ``/``); else a directory. ``None`` (or
            ``src`` itself) rewrites ``src`` in place: each file is swapped in atomically only
            once complete; files already in the aligned layout are left alone.
        force: Replace existing outputs (not needed in place).
        progress, download_progress: As for :func:`merge`.

    Returns:
        A :class:`~mlxload.writer.execute.WriteResult` (``unchanged`` lists files skipped).

    Raises:
        WriterError: in place on an ``hf://`` source or a snapshot in the Hugging Face cache
            given by its path (it would rewrite the cache); and the errors of :func:`merge`.
    """
    refusal = WriterError(
        f"{src}: refusing to align the Hugging Face cache in place; give an output "
        "directory (mlxload align SRC OUT)"
    )
    if out is not None:
        _require_named(out)
    if out is None and isinstance(src, str) and is_hub_spec(src):
        raise refusal  # before downloading anything (hf://org/repo, or org/repo not on disk)
    into_dir = out is not None and names_directory(out)  # (before the write may create it)
    source = open_source(src, progress=download_progress, as_model=False)
    if out is None and source.remote:
        raise refusal
    plan = plan_align(source, out)
    if plan.in_place and (plan.outputs or plan.index) and in_hf_cache(source.files.root):
        raise refusal  # a snapshot given by its local path: the same cache
    copies = _whole_model(src, source) and (into_dir or not _one_file(src, source))
    finish = None
    if not plan.in_place and copies and plan.outputs:  # a file written as a file: nothing
        indexed = plan.index is not None and plan.index_path is not None
        written_in = plan.index_path if indexed else plan.outputs[0].path
        finish = _companions(source, written_in.parent, force)
    return execute(plan, force=force, progress=progress, finish=finish)


def _require_named(out: str | os.PathLike) -> None:
    """Refuse an empty output path: ``Path("")`` is the current directory, so ``merge(src,
    "")`` (an unset shell variable) would silently write ``./model.safetensors``; and what is
    no path at all (``None``).

    Raises:
        WriterArgumentError: ``out`` is empty or not a path.
    """
    if not path_argument(out, "output path", "a file or directory to write"):
        raise WriterArgumentError("the output path is empty; give a file or directory to write")
