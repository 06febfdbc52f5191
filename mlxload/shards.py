"""Find the safetensors files of a checkpoint: a file, a directory, or an index.

A checkpoint is one of:

* a single ``*.safetensors`` file;
* a ``model.safetensors.index.json`` (``{"metadata": {...}, "weight_map": {tensor: file}}``);
* a directory holding such an index, or else one or more ``*.safetensors`` files (taken in
  sorted order).

:func:`checkpoint_files` resolves any of them to a :class:`CheckpointFiles` without opening a
shard. Checking that tensors are where the index says happens when shards are opened.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from mlxload.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    FilePermissionError,
    IndexFileError,
    MissingShardError,
    NotARegularFileError,
)
from mlxload.file_identity import file_identity, open_regular
from mlxload.open_files import with_room_to_open

__all__ = [
    "INDEX_NAME",
    "MODEL_SHARDS",
    "CheckpointFiles",
    "checkpoint_files",
    "read_index",
    "require_path",
    "visible_files",
]

INDEX_NAME = "model.safetensors.index.json"
MODEL_SHARDS = "model*.safetensors"
"""The files mlx-lm reads as a model's weights (it reads no index): an ``adapters.safetensors``
or ``consolidated.safetensors`` beside them is left out."""


@dataclass
class CheckpointFiles:
    """The files of a checkpoint.

    Attributes:
        root: Directory the checkpoint lives in (configs are looked up here).
        files: Shard paths, in index order of first appearance or sorted order.
        weight_map: tensor name -> shard path, when an index says so; else None.
        index_path: The index file, if any.
        index_metadata: The index's ``metadata`` object (``total_size`` etc.).
        identities: Shard path -> :func:`~mlxload.file_identity.file_identity` when the
            checkpoint was listed: a shard opened later that is another file (the checkpoint
            was rewritten meanwhile) is refused rather than read under this listing.
    """

    root: Path
    files: list[Path]
    weight_map: dict[str, Path] | None = None
    index_path: Path | None = None
    index_metadata: dict = field(default_factory=dict)
    identities: dict[Path, tuple[int, ...]] = field(default_factory=dict)


def read_index(index_path: str | os.PathLike, *, require_all: bool = True) -> CheckpointFiles:
    """Read a ``model.safetensors.index.json`` and check that every shard it names exists.

    Args:
        index_path: The index file.
        require_all: Check that every shard is on disk (False for a partial download, e.g. a
            pipeline rank that fetched only its own shards).

    Raises:
        IndexFileError: not JSON, not an object, or lacks a ``weight_map`` of strings.
        MissingShardError: a shard it names is not on disk.
    """
    index_path = Path(index_path)
    try:
        index = orjson.loads(_read_index_bytes(index_path))
    except orjson.JSONDecodeError as e:
        raise IndexFileError(f"{index_path}: index is not valid JSON: {e}") from None
    if type(index) is not dict or type(index.get("weight_map")) is not dict:
        raise IndexFileError(
            f"{index_path}: index must be an object with a 'weight_map' of "
            "tensor name -> shard file"
        )
    root = index_path.parent
    weight_map: dict[str, Path] = {}
    files: dict[str, Path] = {}
    for name, shard in index["weight_map"].items():
        if (
            type(shard) is not str
            or not shard
            or Path(shard).is_absolute()
            or ".." in Path(shard).parts
            or Path(shard).name in ("", ".")
        ):
            raise IndexFileError(
                f"{index_path}: weight_map[{name!r}] must be a relative file name inside "
                f"{root}, got {shard!r}"
            )
        key = os.path.normpath(shard)  # "x" and "./x" are one shard
        path = files.get(key)
        if path is None:
            path = files[key] = root / key
        weight_map[name] = path
    stats = {key: _file_stat(path) for key, path in files.items()}
    missing = [files[k].name for k, st in stats.items() if st is None] if require_all else []
    odd = [  # there but no file (a dangling link is missing, as its blob is: download again)
        files[k]
        for k in stats
        if stats[k] is None
        and os.path.lexists(files[k])
        and (os.path.exists(files[k]) or _is_link_loop(files[k]))
    ]
    if require_all and odd:  # there, but not a file to read
        raise NotARegularFileError(
            f"{index_path} names {odd[0].name}, which is {_what_is(odd[0])}; a shard must be a "
            "regular file"
        )
    if missing:
        raise MissingShardError(
            f"{index_path}: {len(missing)} shard(s) named by the index are missing from {root}: "
            f"{', '.join(sorted(missing)[:5])}{' ...' if len(missing) > 5 else ''}; "
            "download them again (mlxload download) or fix the index"
        )
    _one_path_per_file(files, stats, weight_map)
    metadata = index.get("metadata") or {}
    return CheckpointFiles(
        root=root,
        files=list(files.values()),
        weight_map=weight_map,
        index_path=index_path,
        index_metadata=metadata if type(metadata) is dict else {},
        identities={p: file_identity(stats[k]) for k, p in files.items() if stats.get(k)},
    )


def _one_path_per_file(
    files: dict[str, Path], stats: dict[str, os.stat_result | None], weight_map: dict[str, Path]
) -> None:
    """Make names of one file (``Model-00001.safetensors`` and ``model-00001.safetensors`` on a
    case-insensitive APFS volume, a hard link) one shard, in place: opened twice, its tensors
    would look like duplicates across two shards."""
    first: dict[tuple[int, int], Path] = {}
    alias: dict[Path, Path] = {}
    for key, path in list(files.items()):
        st = stats[key]
        if st is None:
            continue  # missing (a partial download): nothing to merge
        kept = first.setdefault((st.st_dev, st.st_ino), path)
        if kept is not path:
            alias[path] = kept
            del files[key]
    if alias:
        for name, path in weight_map.items():
            weight_map[name] = alias.get(path, path)


def _is_link_loop(path: Path) -> bool:
    """Whether following ``path`` goes round a loop of symbolic links."""
    try:
        path.stat()
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def _what_is(path: Path) -> str:
    """What a path that isn't a regular file is, in a few words."""
    try:
        st = path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a loop of symbolic links"
        if path.is_symlink():
            return f"a link to {os.readlink(path)}, which does not exist"
        return f"unreadable ({e.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device"
    return "not a regular file"


def _file_stat(path: Path) -> os.stat_result | None:
    """``path``'s stat when it is a regular file (through links), else None."""
    try:
        st = path.stat()
    except OSError:  # missing, a name too long for the filesystem, a loop of symlinks...
        return None
    return st if stat.S_ISREG(st.st_mode) else None


MAX_INDEX_SIZE = 256 << 20
"""Largest index file read (bytes); real ones are well under a megabyte."""


def _read_index_bytes(index_path: Path) -> bytes:
    """The index's bytes, refusing a FIFO, device or directory (never blocks) or a huge file."""
    try:
        fd = open_regular(index_path)
    except NotARegularFileError:
        raise IndexFileError(
            f"{index_path}: is not a regular file (a directory, FIFO or device); an index must "
            "be a JSON file"
        ) from None
    try:
        size = os.fstat(fd).st_size
        if size > MAX_INDEX_SIZE:
            raise IndexFileError(
                f"{index_path}: index is {size} bytes, over the {MAX_INDEX_SIZE}-byte limit; "
                "it is not a safetensors index"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(MAX_INDEX_SIZE + 1)
    finally:
        os.close(fd)


def require_path(path: str | os.PathLike) -> None:
    """Refuse an empty path: ``Path("")`` is the current directory, so an unset ``$MODEL``
    would read (or ``align`` rewrite) whatever is there.

    Raises:
        CheckpointNotFoundError: ``path`` is empty.
    """
    if not os.fspath(path):
        raise CheckpointNotFoundError("the checkpoint path is empty; give a file or directory")


def checkpoint_files(path: str | os.PathLike, *, prefer: str | None = None) -> CheckpointFiles:
    """Resolve a file, directory or index path to the checkpoint's shard files.

    Args:
        path: A ``.safetensors`` file, a ``*.index.json`` file, or a directory.
        prefer: For a directory without an index: when some of its files match this glob,
            take only those (``"model*.safetensors"`` is what mlx-lm reads, leaving out an
            ``adapters.safetensors`` or a ``consolidated.safetensors`` beside the model).

    Returns:
        The :class:`CheckpointFiles`.

    Raises:
        FileNotFoundError: the path does not exist.
        CheckpointError: a directory with no safetensors files.
        IndexFileError, MissingShardError: a broken index.
    """
    require_path(path)
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            if _is_link_loop(path):
                raise NotARegularFileError(f"{path}: is a loop of symbolic links")
            raise CheckpointNotFoundError(f"{path}: {_what_is(path)}", path)
        raise CheckpointNotFoundError(f"{path}: no such file or directory", path)
    if not path.is_dir():
        if path.name.endswith(".index.json"):
            return read_index(path)
        return CheckpointFiles(root=path.parent, files=[path])  # opening checks it's a file
    return with_room_to_open(lambda: _directory_files(path, prefer), str(path))


def _directory_files(path: Path, prefer: str | None) -> CheckpointFiles:
    """:func:`checkpoint_files` of a directory."""
    index = path / INDEX_NAME
    if index.is_file():
        return read_index(index)
    indexes = visible_files(path, "*.safetensors.index.json")
    if len(indexes) == 1:
        return read_index(indexes[0])
    preferred = _weight_files(path, prefer) if prefer else []
    files = _distinct(preferred or _weight_files(path, "*.safetensors"))
    if not files:
        try:
            os.listdir(path)  # Path.glob says nothing of a directory it may not list
        except PermissionError as e:
            raise FilePermissionError(
                e.errno,
                f"{path}: permission denied listing the directory; check its permissions",
                str(path),
            ) from None
        raise CheckpointError(
            f"{path}: no *.safetensors files and no {INDEX_NAME} in this directory"
            + _other_formats_hint(path)
        )
    _check_numbered_set(path, files)
    return CheckpointFiles(root=path, files=files)


def _distinct(files: list[Path]) -> list[Path]:
    """``files`` with each file once: a link or second name of a file (``model.safetensors``
    linked to ``weights.safetensors``) would make every tensor a duplicate of itself."""
    seen: dict[tuple[int, int], Path] = {}
    out = []
    for path in files:
        st = path.stat()
        first = seen.setdefault((st.st_dev, st.st_ino), path)
        if first is path:
            out.append(path)
        elif _NUMBERED.fullmatch(first.name) and _NUMBERED.fullmatch(path.name):
            raise CheckpointError(
                f"{path.parent}: {first.name} and {path.name} are the same file (links to "
                "one another); each shard of a numbered set must be its own file"
            )
    return out


def _weight_files(directory: Path, pattern: str) -> list[Path]:
    """:func:`visible_files` for weights: a link to nothing among them (a Hugging Face cache
    whose blob was deleted) would otherwise be left out silently, and the checkpoint read
    with its tensors missing.

    Raises:
        MissingShardError: naming the link and where it points.
    """
    files = []
    for p in sorted(directory.glob(pattern)):
        if p.name.startswith("."):
            continue
        if p.is_file():
            files.append(p)
        elif p.is_symlink() and not p.exists():
            if _is_link_loop(p):
                raise NotARegularFileError(f"{p}: is a loop of symbolic links; remove the link")
            raise MissingShardError(
                f"{p} is a link to {os.readlink(p)}, which does not exist (a Hugging Face "
                "cache whose blob was deleted?); restore the file, or remove the link"
            )
        elif not p.is_dir():  # (a directory named like a shard is no shard: left alone)
            raise NotARegularFileError(
                f"{p}: is {_what_is(p)}, named like a weights file; a shard must be a regular "
                "file: remove or rename it"
            )
    return files


_OTHER_FORMATS = {
    "*.bin": "PyTorch weights: convert them to safetensors",
    "*.pt": "PyTorch weights: convert them to safetensors",
    "*.pth": "PyTorch weights: convert them to safetensors",
    "*.gguf": "GGUF weights: mlxload reads safetensors only",
    "*.npz": "NumPy weights: load them with mx.load, or save them as safetensors",
}


def _other_formats_hint(directory: Path) -> str:
    """What else the directory holds: weights in a format we don't read, or the unfinished
    output of an interrupted mlxload write."""
    unfinished = sorted(directory.glob(".*.mlxload-partial"))
    if unfinished:
        return (
            f" (it holds {unfinished[0].name}, unfinished output of an mlxload merge, split "
            "or align that was interrupted: run the same command again to finish it)"
        )
    for pattern, hint in _OTHER_FORMATS.items():
        found = visible_files(directory, pattern)
        if found:
            return f" (it holds {found[0].name}: {hint})"
    return ""


_NUMBERED = re.compile(r"(.*)-(\d{5})-of-(\d{5})\.safetensors")


def _check_numbered_set(directory: Path, files: list[Path]) -> None:
    """Shards named ``NAME-0000i-of-0000N.safetensors`` without an index must all be there:
    a split, copy or download stopped part way leaves a set that would load as a model with
    tensors missing.

    Raises:
        MissingShardError: naming the first missing shard and how many are there.
    """
    sets: dict[tuple[str, str], set[int]] = {}
    for f in files:
        m = _NUMBERED.fullmatch(f.name)
        if m:
            sets.setdefault((m[1], m[3]), set()).add(int(m[2]))
    for (stem, total), present in sorted(sets.items()):
        first = 0 if 0 in present else 1  # some tools number from 0 (mlx-lm loads those too)
        missing = sorted(set(range(first, first + int(total))) - present)
        if missing:
            gone = f"{stem}-{missing[0]:05d}-of-{total}.safetensors"
            raise MissingShardError(
                f"{directory}: has {len(present)} of the {int(total)} shards of "
                f"{stem}-*-of-{total}.safetensors and no index; {gone} is missing "
                f"({len(missing)} in all): a split, copy or download stopped part way? "
                "finish it (rerun the command), or remove the partial set"
            )


def visible_files(directory: Path, pattern: str) -> list[Path]:
    """Regular files matching ``pattern``, sorted, leaving out hidden ones: macOS writes an
    AppleDouble ``._model.safetensors`` beside every file it copies to exFAT/FAT/SMB drives,
    and ``Path.glob`` (unlike the shell and mlx-lm's ``glob.glob``) matches dot-files."""
    return sorted(p for p in directory.glob(pattern) if not p.name.startswith(".") and p.is_file())
