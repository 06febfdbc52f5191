"""``mlxload.load``: a lazy ``Mapping[str, mx.array]`` over a whole checkpoint.

A :class:`Checkpoint` covers a single file, a directory, an index, or (through
:mod:`mlxload.hub`) a Hub repo. Shards are opened (header only) the first time one of their
tensors is asked for; a tensor is read into MLX the first time it is accessed and kept, so a
second access costs nothing.

Example:
    >>> import mlx.core as mx, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> mx.save_safetensors(os.path.join(d, "model.safetensors"), {"w": mx.ones((2, 2))})
    >>> ckpt = load(d)
    >>> list(ckpt), ckpt["w"].sum().item()
    (['w'], 4.0)
"""

from __future__ import annotations

import os
import shlex
import threading
import warnings
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping, ValuesView
from pathlib import Path
from typing import TypeVar

import mlx.core as mx

from mlxload.byte_ranges import ByteRanges
from mlxload.errors import (
    CheckpointError,
    DuplicateTensorError,
    FileChangedError,
    FileClosedError,
    InvalidArgumentError,
    MlxloadError,
    TensorNotFoundError,
    TensorNotInShardError,
)
from mlxload.file_identity import identity_change
from mlxload.header import FileHeader, TensorInfo, read_header
from mlxload.hub.spec import is_hub_spec
from mlxload.open_files import ensure_open_files, opening_shard
from mlxload.shards import CheckpointFiles, checkpoint_files, require_path, visible_files
from mlxload.tensor_file import TensorFile, check_zero_copy, zero_copy_supported

__all__ = ["Checkpoint", "load", "unindexed_note"]


T = TypeVar("T")

_ITER_BATCH_BYTES = 256 << 20
"""How much ``items()``/``values()`` read at once: enough for the parallel copy to run at full
speed, little enough that breaking out early reads little more than was used."""


class Checkpoint(Mapping[str, mx.array]):
    """Tensors of a checkpoint, read on first access.

    Args:
        files: The resolved checkpoint (see :func:`mlxload.shards.checkpoint_files`).
        zero_copy: ``"auto"`` (map on Metal, one copy elsewhere), True, or False.
        cache: Keep tensors after their first access (default); threads asking for the same
            tensor at once share one read. With False every access reads again and the
            checkpoint itself holds no tensor memory. Either way, tensors read in one call
            (``materialize``, ``load_file``) that are neighbours in the file share buffers of
            up to 256 MiB, freed once none of them is referenced; one tensor read alone
            (``ckpt[name]``) has its own.
        evict_page_cache: Drop copied ranges from the page cache so the model isn't held twice
            in RAM (copy path, Linux only: macOS has no ``posix_fadvise``, so there it does
            nothing).
        readable: Shard path -> the ranges it holds, for shards fetched range by range (see
            :class:`~mlxload.tensor_file.TensorFile`).

    Attributes:
        root: Directory of the checkpoint (where config files live).
        files: Shard paths.
    """

    def __init__(
        self,
        files: CheckpointFiles,
        *,
        zero_copy: bool | str = "auto",
        cache: bool = True,
        evict_page_cache: bool = False,
        readable: Mapping[Path, ByteRanges] | None = None,
    ) -> None:
        check_zero_copy(zero_copy)
        self._evict = evict_page_cache
        self._readable = readable or {}
        self._files = files
        self._identities = dict(files.identities)  # shard -> the file it must still be
        self.root: Path = files.root
        self.files: list[Path] = list(files.files)
        self._zero_copy = zero_copy
        self._cache_enabled = cache
        self._open: dict[Path, TensorFile] = {}
        self._cache: dict[str, mx.array] = {}
        self._validated: dict[Path, FileHeader] = {}  # headers load() already read
        self._inflight: dict[str, threading.Event] = {}  # name -> set when its read ends
        self._lock = threading.RLock()
        self._where: dict[str, Path] | None = (
            dict(files.weight_map) if files.weight_map is not None else None
        )
        # Each shard stays open once used; a zero-copy mapping holds a second descriptor
        # (Python's mmap duplicates it) for as long as arrays view it.
        mapped = zero_copy is True or (zero_copy == "auto" and zero_copy_supported())
        ensure_open_files(len(self.files) * (2 if mapped else 1))

    # -- shard bookkeeping ------------------------------------------------------------------
    def _shard(self, path: Path) -> TensorFile:
        with self._lock:
            tf = self._open.get(path)
            if tf is None:
                with opening_shard(str(path), len(self.files)):
                    tf = TensorFile(
                        path,
                        zero_copy=self._zero_copy,
                        evict_page_cache=self._evict,
                        header=self._validated.pop(path, None),
                        readable=self._readable.get(path),
                    )
                # (A shard fetched range by range grows as it is read: not checked.)
                planned = None if path in self._readable else self._identities.get(path)
                now = tf.header.identity
                change = None if planned is None or now is None else identity_change(planned, now)
                if change is not None:
                    tf.close()
                    since = (
                        f"the checkpoint was opened (its index {self._files.index_path} was "
                        "read before)"
                        if path in self._files.identities
                        else "the checkpoint first read it (and was closed)"
                    )
                    raise FileChangedError(
                        f"{path}: {change} since {since}: the checkpoint "
                        "was rewritten meanwhile; open it again"
                    )
                if planned is None and now is not None and path not in self._readable:
                    # Reopened after close(), it must be the same file, or the tensors read
                    # before and after would come from two versions of the checkpoint.
                    self._identities[path] = now
                self._open[path] = tf
                if self._where is not None:
                    try:
                        self._check_shard_against_index(tf)
                    except BaseException:
                        del self._open[path]
                        tf.close()
                        raise
            return tf

    def _on_shard(self, path: Path, read: Callable[[TensorFile], T]) -> T:
        """``read(shard)``, with the shard opened again if another thread's :meth:`close`
        closed it between taking it and reading (closing doesn't end the checkpoint)."""
        for _ in range(3):
            tf = self._shard(path)
            try:
                return read(tf)
            except FileClosedError:
                with self._lock:
                    if self._open.get(path) is tf:  # closed otherwise: not close()'s doing
                        raise
        return read(self._shard(path))

    def _check_shard_against_index(self, tf: TensorFile) -> None:
        """A tensor this shard holds but the index places elsewhere is a duplicate only if the
        other shard holds it too; otherwise the index is stale, and reading that name reports
        it (TensorNotInShardError) without blocking this shard's other tensors."""
        for name in tf.tensors:
            owner = self._where.get(name)
            if owner is not None and owner != tf.path and name in self._shard(owner).tensors:
                raise DuplicateTensorError(
                    f"tensor {name!r} is stored in both {tf.path.name} and {owner.name} "
                    f"(the index {self._files.index_path} names {owner.name}); a tensor must "
                    "be stored in exactly one shard: remove the stale copy"
                )

    def _index(self) -> dict[str, Path]:
        """Name -> shard for every tensor; opens every shard's header when there's no index."""
        with self._lock:
            if self._where is None:
                where: dict[str, Path] = {}
                for path in self.files:
                    tf = self._shard(path)
                    for name in tf.tensors:
                        if name in where:
                            raise DuplicateTensorError(
                                f"tensor {name!r} is stored in both {where[name].name} and "
                                f"{path.name} in {self.root}; remove the stale shard"
                            )
                        where[name] = path
                self._where = where
            return self._where

    def _file_of(self, name: str) -> TensorFile:
        path = self._index().get(name)
        if path is None:
            raise TensorNotFoundError.among(
                f"{self.root}: checkpoint has no tensor named {name!r}", name, self._index()
            )
        tf = self._shard(path)
        if name not in tf.tensors:
            raise TensorNotInShardError(
                f"the index ({self._files.index_path}) says tensor {name!r} is in "
                f"{path.name}, but that shard does not contain it; the checkpoint is "
                "incomplete or the index is stale"
            )
        return tf

    # -- Mapping ----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> mx.array:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        return self.materialize([name])[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index())

    def items(self) -> ItemsView[str, mx.array]:
        """``(name, array)`` pairs in :meth:`keys` order, read in batches of up to 256 MiB.

        A batch costs one :meth:`materialize`: for 5,000 small tensors that is 7x faster than
        a read per tensor, which is what ``Mapping.items`` would do. So
        ``model.load_weights(list(ckpt.items()))`` reads at ``load_file``'s speed. With
        ``cache=False`` each tensor is still read on its own when its turn comes, so a
        consumer that keeps only some of them holds no buffer shared with the others.
        """
        return _BatchedItems(self)

    def values(self) -> ValuesView[mx.array]:
        """Arrays in :meth:`keys` order, read in batches like :meth:`items`."""
        return _BatchedValues(self)

    def _in_batches(self) -> Iterator[tuple[str, mx.array]]:
        names = list(self._index())
        if not self._cache_enabled:
            for name in names:
                yield name, self[name]
            return
        batch: list[str] = []
        size = 0
        for name in names:
            try:
                size += 0 if name in self._cache else self.info(name).nbytes
            except MlxloadError:  # (a stale index): the pairs before it first, as one by one
                yield from self._batch(batch)
                batch, size = [], 0
                yield name, self[name]  # raises, naming it
            batch.append(name)
            if size >= _ITER_BATCH_BYTES:
                yield from self._batch(batch)
                batch, size = [], 0
        yield from self._batch(batch)

    def _batch(self, names: list[str]) -> Iterator[tuple[str, mx.array]]:
        """One batch's pairs; when the batch read fails, one by one, so that every pair
        before the failing tensor still comes, and then its error."""
        try:
            arrays = self.materialize(names)
        except MlxloadError:
            arrays = None
        if arrays is not None:
            yield from arrays.items()
            return
        for name in names:
            yield name, self[name]

    def __len__(self) -> int:
        return len(self._index())

    def __contains__(self, name: object) -> bool:
        return name in self._index()

    def __repr__(self) -> str:
        try:
            tensors: int | str = len(self)
        except (MlxloadError, OSError):  # a repr must not raise: a broken shard shows on use
            tensors = "?"
        return f"Checkpoint({str(self.root)!r}, files={len(self.files)}, tensors={tensors})"

    # -- extras -----------------------------------------------------------------------------
    def materialize(self, names: Iterable[str] | None = None) -> dict[str, mx.array]:
        """Read many tensors at once (all by default), batched per shard.

        Returns:
            name -> evaluated array, in the order asked.
        """
        names = list(self._index() if names is None else names)
        result: dict[str, mx.array] = {}
        mine: list[str] = []
        theirs: dict[str, threading.Event] = {}
        done = threading.Event()  # one for every name this call reads (not one per name)
        with self._lock:  # claim what nobody is reading yet; wait for the rest below
            for name in dict.fromkeys(names):
                cached = self._cache.get(name)
                if cached is not None:
                    result[name] = cached
                elif self._cache_enabled and name in self._inflight:
                    theirs[name] = self._inflight[name]
                else:
                    mine.append(name)
                    if self._cache_enabled:
                        self._inflight[name] = done
        try:
            result.update(self._read(mine))
        finally:
            with self._lock:
                for name in mine:
                    if self._inflight.get(name) is done:
                        del self._inflight[name]
            done.set()
        for name, event in theirs.items():
            event.wait()
            cached = self._cache.get(name)
            # None: that read failed (or was released meanwhile): read it here, reporting
            # any error to this caller too.
            result[name] = cached if cached is not None else self.materialize([name])[name]
        return {n: result[n] for n in names}

    def _read(self, names: list[str]) -> dict[str, mx.array]:
        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self._file_of(name).path, []).append(name)
        out: dict[str, mx.array] = {}
        for path, wanted in by_file.items():
            arrays = self._on_shard(path, lambda tf, wanted=wanted: tf.read(wanted))
            if self._cache_enabled:
                with self._lock:
                    self._cache.update(arrays)
            out.update(arrays)
        return out

    def read_block(
        self, name: str, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None
    ) -> mx.array:
        """Read only a block of a tensor (rows of axis 0, columns of the last axis); not cached.

        See :meth:`mlxload.tensor_file.TensorFile.read_block`.
        """
        path = self._file_of(name).path
        return self._on_shard(path, lambda tf: tf.read_block(name, rows, cols))

    def block_ranges(
        self, name: str, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None
    ) -> tuple[Path, list[tuple[int, int]]]:
        """The shard holding a tensor and the ``(offset, nbytes)`` ranges a read of this block
        touches (all of the tensor by default).

        See :meth:`mlxload.tensor_file.TensorFile.block_ranges`.
        """
        tf = self._file_of(name)
        if rows is None and cols is None:
            info = tf.info(name)
            return tf.path, [(info.offset, info.nbytes)]
        return tf.path, tf.block_ranges(name, rows, cols)

    def read_blocks(self, requests: Iterable[tuple]) -> dict:
        """Many blocks at once, batched per shard: ``(key, name, rows, cols)`` -> ``{key: array}``.

        See :meth:`mlxload.tensor_file.TensorFile.read_blocks`; not cached.
        """
        by_file: dict[Path, list[tuple]] = {}
        for request in requests:
            by_file.setdefault(self._file_of(request[1]).path, []).append(request)
        out: dict = {}
        for path, wanted in by_file.items():
            out.update(self._on_shard(path, lambda tf, wanted=wanted: tf.read_blocks(wanted)))
        return out

    def info(self, name: str) -> TensorInfo:
        """Dtype, shape and location of a tensor, without reading it."""
        return self._file_of(name).info(name)

    def file_of(self, name: str) -> Path:
        """The shard file holding tensor ``name``.

        Raises:
            TensorNotFoundError, TensorNotInShardError: as reading it would.
        """
        return self._file_of(name).path

    def unindexed(self, beside: str | None = None) -> dict[str, Path]:
        """Tensors the shards hold that the index doesn't list (a stale index), with their
        shard; empty without an index. Opens every shard's header.

        Args:
            beside: Also the tensors of files matching this glob in the index's directory
                that the index doesn't name (``"model*.safetensors"``: what mlx-lm, which reads
                no index, would load).
        """
        if self._files.weight_map is None:
            return {}
        listed = self._index()
        headers = self.headers()
        if beside is not None:
            named = {p.resolve() for p in self.files}
            headers += [
                read_header(p) for p in visible_files(self.root, beside) if p.resolve() not in named
            ]
        return {
            name: header.path for header in headers for name in header.tensors if name not in listed
        }

    def headers(self) -> list[FileHeader]:
        """The validated header of every shard (opens each shard's header once)."""
        return [self._shard(path).header for path in self.files]

    @property
    def metadata(self) -> dict[str, str]:
        """``__metadata__`` of every shard, merged (opens all shard headers)."""
        merged: dict[str, str] = {}
        for path in self.files:
            merged.update(self._shard(path).header.metadata)
        return merged

    @property
    def index_metadata(self) -> dict:
        """The index file's ``metadata`` (``total_size`` ...), empty without an index."""
        return dict(self._files.index_metadata)

    @property
    def paths(self) -> dict[str, str]:
        """Tensor name -> ``"zero-copy"`` / ``"copy"`` for each tensor read so far."""
        out: dict[str, str] = {}
        with self._lock:  # (another thread may be opening a shard)
            for tf in self._open.values():
                out.update(tf.paths)
        return out

    def release(self, names: Iterable[str] | None = None) -> None:
        """Forget cached tensors (all by default) so their memory can be freed (a buffer
        shared with neighbours read in the same call is freed with the last of them)."""
        if names is None:
            self._cache.clear()
        else:
            for n in names:
                self._cache.pop(n, None)

    def close(self) -> None:
        """Close every shard. Arrays already returned stay valid; reading the checkpoint
        again reopens the shards it needs (a closed :class:`~mlxload.safe_open` raises)."""
        with self._lock:
            for tf in self._open.values():
                tf.close()
            self._open.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _BatchedItems(ItemsView):
    _mapping: Checkpoint

    def __iter__(self) -> Iterator[tuple[str, mx.array]]:
        return self._mapping._in_batches()


class _BatchedValues(ValuesView):
    _mapping: Checkpoint

    def __iter__(self) -> Iterator[mx.array]:
        return (array for _, array in self._mapping._in_batches())


def unindexed_note(root: Path, unindexed: Mapping[str, Path]) -> str:
    """The start of what to say of tensors a stale index leaves out (see
    :meth:`Checkpoint.unindexed`), naming how many and the first with its shard."""
    name, shard = next(iter(unindexed.items()))
    return (
        f"{root}: the index doesn't list {len(unindexed)} tensor(s) its shards hold, e.g. "
        f"{name!r} in {Path(shard).name} (a stale index?)"
    )


def load(
    path: str | os.PathLike,
    *,
    zero_copy: bool | str = "auto",
    cache: bool = True,
    evict_page_cache: bool = False,
    align: bool | str = False,
    prefer: str | None = None,
    **hub_kwargs,
) -> Checkpoint:
    """Open a checkpoint: a file, a directory, an index, ``hf://org/repo[@rev]`` or ``org/repo``.

    Args:
        path: Where the checkpoint is. Hub specs are downloaded into (or found in) the Hugging
            Face cache first; extra keyword arguments go to :func:`mlxload.hub.resolve`.
        zero_copy: ``"auto"`` (map on Metal, one copy elsewhere), True, or False.
        cache: Keep tensors after first access (see :class:`Checkpoint`).
        evict_page_cache: Drop copied ranges from the page cache (see :class:`Checkpoint`).
        align: What to do when some tensors are misaligned for zero-copy (see
            :func:`mlxload.align`). ``False`` (default): nothing. ``"auto"``: rewrite the
            checkpoint in place, once, when that buys zero-copy (a Metal backend) and the files
            are local, writable and not in the Hugging Face cache; on Metal where it may not,
            warn once with the command to run; elsewhere nothing. ``True``: rewrite in place
            whenever misaligned (an error for the Hugging Face cache, whose blobs are never
            touched: use ``mlxload align SRC OUT``).
        prefer: For a directory without an index, the glob to take shards from when any
            match (see :func:`mlxload.shards.checkpoint_files`); default every
            ``*.safetensors``.

    Returns:
        A :class:`Checkpoint`; nothing but index/header bytes has been read yet.

    Raises:
        InvalidArgumentError: ``align`` is not False, True or ``"auto"``; ``zero_copy`` is not
            ``"auto"``, True or False (checked before anything is downloaded or rewritten).
        TypeError: a keyword argument neither this nor a Hub download takes.
        CheckpointNotFoundError: a local path that doesn't exist and isn't a Hub spec (a
            ``FileNotFoundError`` too).
        CheckpointError, SafetensorsError: a broken checkpoint.
        HubError: the Hub download failed.
    """
    if not (align is None or align is False or align is True or align == "auto"):
        # Checked before anything happens: a truthy typo ("AUTO", "yes", 1) would otherwise
        # rewrite files in place.
        raise InvalidArgumentError(f"align must be False, True or 'auto', got {align!r}")
    check_zero_copy(zero_copy)  # also before a download or an in-place align
    require_path(path)
    local: Path | None = None
    if is_hub_spec(path):
        from mlxload import hub

        local = hub.resolve(os.fspath(path), **hub_kwargs)
    elif hub_kwargs:
        _check_hub_kwargs(hub_kwargs)
    if local is None:
        local = Path(path).absolute()  # shards open on first use, maybe after an os.chdir
    if align:
        _align_if_needed(local, align)
    ckpt = Checkpoint(
        checkpoint_files(local, prefer=prefer),
        zero_copy=zero_copy,
        cache=cache,
        evict_page_cache=evict_page_cache,
    )
    if ckpt._files.weight_map is None and len(ckpt.files) == 1:
        # One file: say now, not on first use, if it isn't safetensors. The file isn't held
        # open from here; first use reuses this header if the file is still the same one.
        ckpt._validated[ckpt.files[0]] = read_header(ckpt.files[0])
    return ckpt


def _check_hub_kwargs(kwargs: dict) -> None:
    """For a local path the Hub options are unused; a name no Hub download takes is a typo
    (``evict_pagecache=True``) that must not pass silently.

    Raises:
        TypeError: as Python raises for an unexpected keyword argument.
    """
    import inspect

    from mlxload.hub import download

    known = set(inspect.signature(download).parameters) - {"repo"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(
            f"load() got an unexpected keyword argument {unknown[0]!r}; it takes zero_copy, "
            f"cache, evict_page_cache, align, prefer, and for the Hub {', '.join(sorted(known))}"
        )


def _align_if_needed(local: Path, mode: bool | str) -> None:
    from mlxload.hub.cache import in_hf_cache
    from mlxload.writer import align, alignment_report

    files = checkpoint_files(local)
    report = alignment_report(files)
    if report.ready:
        return
    if mode == "auto" and not zero_copy_supported():
        return  # this backend copies every tensor anyway: aligning gains nothing, say nothing
    why_not = None
    if in_hf_cache(files.root):
        why_not = "it is in the Hugging Face cache"
    elif not all(os.access(p, os.W_OK) for p in [files.root, *files.files]):
        why_not = "it is not writable"
    if why_not is None:
        align(local)
        return
    if mode == "auto":
        if str(local) not in _warned:
            _warned.add(str(local))
            command = f"mlxload align {shlex.quote(str(local))} OUTDIR"
            warnings.warn(
                f"{local}: {report.verdict(command)}; not rewriting in place because {why_not}",
                stacklevel=3,
            )
        return
    raise CheckpointError(
        f"{files.root}: can't align in place because {why_not}; write an aligned copy with "
        f"`mlxload align {shlex.quote(str(files.root))} OUT`"
    )


_warned: set[str] = set()
