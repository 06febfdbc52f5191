"""Plan a write from source headers only: which tensors go to which file, where, and the header.

Nothing here touches tensor data or the destination. A :class:`WritePlan` is complete before
the first byte is written: the executor only copies ranges and renames files.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from mlxload.header import MAX_HEADER_SIZE, FileHeader, TensorInfo
from mlxload.shards import INDEX_NAME
from mlxload.work_names import output_of
from mlxload.writer.errors import (
    EmptySourceError,
    InvalidSizeError,
    OutputHeaderTooLargeError,
    OutputIsSourceError,
    OutputNameError,
    OutputNotADirectoryError,
)
from mlxload.writer.layout import PAGE_SIZE, Placed, build_header, order_key, place
from mlxload.writer.sources import Source, merge_metadata, same_file

__all__ = [
    "OutputPlan",
    "WritePlan",
    "index_bytes",
    "names_directory",
    "plan_align",
    "plan_merge",
    "plan_split",
    "require_directory",
    "require_directory_name",
    "require_safetensors_name",
    "shard_name",
]

_PLAN_VERSION = 1


def names_directory(out: str | os.PathLike) -> bool:
    """Whether an output path means a directory: one that exists, or a path ending with ``/``
    (checked on the string: ``Path()`` drops a trailing slash)."""
    return os.fspath(out).endswith(("/", os.sep)) or Path(out).is_dir()


def require_directory(out_dir: Path) -> None:
    """Fail unless ``out_dir`` is a directory or can be created: no file in its way.

    Raises:
        OutputNotADirectoryError: ``out_dir``, or its nearest existing ancestor, is a file.
    """
    for path in (out_dir, *out_dir.parents):
        if not path.exists():
            continue
        if path.is_dir():
            return
        where = "is a file, not a directory" if path == out_dir else f"is under {path}, a file"
        raise OutputNotADirectoryError(
            f"{out_dir}: {where}; give a directory (it is created if missing) for the output"
        )


def require_directory_name(out_dir: Path, writes: str) -> None:
    """Refuse a directory output named like a file (``x.safetensors``) that is not a directory
    already: it would be created as a directory of that name.

    Args:
        out_dir: The output directory.
        writes: Why a directory, for the message (``"split writes a directory ..."``).

    Raises:
        OutputNotADirectoryError: ``out_dir`` ends with ``.safetensors``.
    """
    if out_dir.name.endswith(".safetensors") and not out_dir.is_dir():
        raise OutputNotADirectoryError(
            f"{out_dir}: names a file, but {writes}; give a directory, or merge it into one "
            "file (mlxload merge)"
        )


@dataclass
class OutputPlan:
    """One output file.

    Attributes:
        path: Final path.
        header: Length prefix + padded header JSON (see :func:`~.layout.build_header`).
        tensors: Tensors in output order, each with its source file in ``sources``.
        sources: Tensor name -> source shard path.
        source_identity: Source shard path -> identity of the file its header was read from
            (see :func:`mlxload.file_identity.file_identity`); checked when the sources are opened.
    """

    path: Path
    header: bytes
    tensors: list[Placed]
    sources: dict[str, Path]
    source_identity: dict[Path, tuple] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        return len(self.header)

    @property
    def data_size(self) -> int:
        return self.tensors[-1].end if self.tensors else 0

    @property
    def size(self) -> int:
        return self.data_start + self.data_size

    def digest(self) -> str:
        """Hash of the layout and the sources' identity (path, size, mtime, ctime, inode).

        A journal written under another digest (other arguments, a source changed) is stale.
        The ctime is there because a rewrite in place that puts the mtime back (``rsync
        --inplace -t``, ``cp -p``) changes only it; a ``chmod`` meanwhile restarts the
        output too, which costs time but never data.
        """
        h = hashlib.sha256()
        h.update(f"mlxload-writer-{_PLAN_VERSION}\0".encode() + os.fsencode(self.path.name) + b"\0")
        h.update(self.header)
        stats = {}
        for t in self.tensors:
            src = self.sources[t.name]
            if src not in stats:
                st = os.stat(src)
                # Absolute: the same run started from another directory resumes too. As
                # bytes (in hex): a name that isn't UTF-8 is no JSON string.
                stats[src] = (
                    os.fsencode(os.path.abspath(src)).hex(),
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    st.st_ino,
                )
            h.update(orjson.dumps([stats[src][0], t.src_offset, t.begin, t.end]))
        h.update(orjson.dumps(sorted(stats.values())))
        return h.hexdigest()


@dataclass
class WritePlan:
    """Everything one merge/split/align will write.

    Attributes:
        kind: ``"merge"``, ``"split"`` or ``"align"``.
        outputs: Files to write, in order.
        index_path, index: The index file and its bytes (written last), if any.
        in_place: Outputs replace their own sources (align without OUT): no ``force`` needed.
        unchanged: Files already in the planned layout (align in place skips them).
        replaces: Shards of another checkpoint in the output directory (``model.safetensors``,
            ``model-0000i-of-0000M.safetensors`` this write doesn't make, when it writes such
            names itself), and its index when this write makes none: left there, a loader
            would mix two checkpoints (or read the old one through its index), so they are
            removed once the write is complete (with ``force``; refused without).
        abandoned: Shard names in a split's directory that an interrupted split with other
            settings left work files for (hidden ``.NAME.mlxload-partial``, journal, lock)
            and this split doesn't write: that work can no longer be resumed, so it is
            removed once the split is complete (unless another run holds it).
    """

    kind: str
    outputs: list[OutputPlan]
    index_path: Path | None = None
    index: bytes | None = None
    in_place: bool = False
    unchanged: list[Path] = field(default_factory=list)
    replaces: list[Path] = field(default_factory=list)
    abandoned: list[Path] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        """Tensor bytes written (the index's ``total_size``)."""
        return sum(o.data_size for o in self.outputs)


_TOO_LARGE = {
    "merge": "too many tensors or too much metadata for one file; split the checkpoint into "
    "shards instead (mlxload split)",
    "split": "the {meta}-byte __metadata__ every shard repeats leaves no room for even one "
    "tensor's entry; give the checkpoint less metadata",
    "align": "align keeps each file's tensors together; split the checkpoint into shards "
    "instead (mlxload split)",
}
"""What to do about an output header over the readers' limit, by kind of write."""


def _output(
    path: Path, source: Source, infos: list[TensorInfo], metadata: dict, kind: str
) -> OutputPlan:
    placed = place(infos)
    header = build_header(placed, metadata)
    if len(header) - 8 > MAX_HEADER_SIZE:
        meta = len(orjson.dumps(metadata))
        raise OutputHeaderTooLargeError(
            f"{path}: its header would be {len(header) - 8} bytes, over the "
            f"{MAX_HEADER_SIZE}-byte limit safetensors readers accept: "
            + _TOO_LARGE[kind].format(meta=meta)
        )
    return OutputPlan(
        path=path,
        header=header,
        tensors=placed,
        sources={p.name: source.shard_of[p.name] for p in placed},
        source_identity={h.path: h.identity for h in source.headers},
    )


def index_bytes(weight_map: dict[str, str], total_size: int, extra: dict | None = None) -> bytes:
    """``model.safetensors.index.json`` as mlx-lm/transformers write it (weight_map sorted).

    Args:
        weight_map: Tensor name -> shard file name.
        total_size: Sum of tensor bytes.
        extra: Other ``metadata`` keys to keep (``total_size`` is always recomputed).
    """
    metadata = {k: v for k, v in (extra or {}).items() if k != "total_size"}
    metadata["total_size"] = total_size
    obj = {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"


_SHARD_NAME = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors")


def _other_shards(out_dir: Path, names: set[str]) -> list[Path]:
    """Files in ``out_dir`` named like shards of a checkpoint but not among ``names``."""
    if not out_dir.is_dir():
        return []
    return sorted(
        p
        for p in out_dir.iterdir()
        if _SHARD_NAME.fullmatch(p.name) and p.name not in names and not p.is_dir()
    )


def _abandoned_shards(out_dir: Path, names: set[str]) -> list[Path]:
    """Shard paths in ``out_dir`` with work files (see ``WritePlan.abandoned``) but not among
    ``names``."""
    if not out_dir.is_dir():
        return []
    found = set()
    for p in out_dir.iterdir():
        owner = output_of(p.name, ("partial", "journal", "lock"))  # shard names are short
        if owner and _SHARD_NAME.fullmatch(owner) and owner not in names:
            found.add(out_dir / owner)
    return sorted(found)


def _other_checkpoint(
    out_dir: Path, outputs: list[OutputPlan], source: Source, kind: str, *, writes_index: bool
) -> list[Path]:
    """Files of another checkpoint in ``out_dir`` (see ``WritePlan.replaces``): its shards,
    and its index when this write makes none (loaders prefer an index to the files, so it
    would hide the new ones). None when this write's outputs aren't named like shards (a
    ``merged.safetensors`` mixes nothing a loader of ``model*.safetensors`` reads).

    Raises:
        OutputIsSourceError: some are this write's own sources, shards or index: they can't
            be removed (they are the input) and can't stay (they would sit beside the new
            shards, or hide them).
    """
    if not any(_SHARD_NAME.fullmatch(o.path.name) for o in outputs):
        return []
    others = _other_shards(out_dir, {o.path.name for o in outputs})
    if not writes_index and out_dir.is_dir():
        others += sorted(p for p in out_dir.glob("*.safetensors.index.json") if p.is_file())
    own = [p for p in others if _is_source(p, source)]
    if own:
        new = "file" if kind == "merge" else "shards"
        why = (
            "that globs model*.safetensors would mix the two"
            if any(p.name.endswith(".safetensors") for p in own)
            else f"of the directory would go by that index and never read the new {new}"
        )
        raise OutputIsSourceError(
            f"{out_dir} holds this {kind}'s own source file(s) ({', '.join(p.name for p in own)}"
            f"): they are its input, so they are never removed, and the new {new} would sit "
            f"beside them, where a loader {why}; {kind} into another directory"
        )
    return others


def _refuse_own_index(index_path: Path, source: Source, kind: str) -> None:
    """Refuse to write an index over the source's own (an input, like its shards).

    Raises:
        OutputIsSourceError: ``index_path`` is the source's index.
    """
    own = source.files.index_path
    if own is not None and same_file(index_path, own):
        raise OutputIsSourceError(
            f"{index_path} is this {kind}'s own source index: it is the input, so it is never "
            f"replaced; {kind} into another directory"
        )


def _is_source(path: Path, source: Source) -> bool:
    """``path`` is one of ``source``'s shards or its index."""
    index = source.files.index_path
    return any(same_file(path, f) for f in source.files.files) or (
        index is not None and same_file(path, index)
    )


def _same_dir(a: Path, b: Path) -> bool:
    """One directory, by path or by identity (a symlinked or differently cased name)."""
    return a.resolve() == b.resolve() or same_file(a, b)


def _refuse_beside_sources(out: Path, source: Source) -> None:
    """A merged file in the directory of the files it merges, where loaders read every file:
    no index there, and either several source files or an output named like a model's shard
    (``weights.safetensors`` merged into ``model.safetensors``). With an index, loaders read
    the index (a ``consolidated.safetensors`` beside indexed shards is the usual layout).

    Raises:
        OutputIsSourceError: ``out`` would sit beside its sources that way.
    """
    files = source.files
    if not _same_dir(out.parent, files.root):
        return
    if any(p.is_file() for p in out.parent.glob("*.safetensors.index.json")):
        return
    if any(same_file(out, f) for f in files.files):
        return  # onto a source itself: the run's own check says so (align rewrites in place)
    if len(files.files) < 2 and not _SHARD_NAME.fullmatch(out.name):
        return
    names = ", ".join(p.name for p in files.files[:3]) + (" ..." if len(files.files) > 3 else "")
    raise OutputIsSourceError(
        f"{out}: would sit beside the file(s) it merges ({names}) in {files.root}, which has "
        "no index, so a loader reading that directory would find every tensor twice; merge "
        "into another directory"
    )


def shard_name(i: int, n: int) -> str:
    """``model-0000i-of-0000N.safetensors``, or ``model.safetensors`` when ``n == 1``."""
    return "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"


def plan_merge(source: Source, out: Path, *, on_conflict: str = "error") -> WritePlan:
    """One aligned file holding every tensor of ``source``.

    Raises:
        OutputNotADirectoryError: ``out``'s directory is a file.
        OutputIsSourceError: ``out`` would sit in the directory of the shards it merges.
        MetadataConflictError: see :func:`~.sources.merge_metadata`.
    """
    require_directory(out.parent)
    _refuse_beside_sources(out, source)
    metadata = merge_metadata(source.headers, on_conflict)
    outputs = [_output(out, source, list(source.tensors.values()), metadata, "merge")]
    replaces = _other_checkpoint(out.parent, outputs, source, "merge", writes_index=False)
    return WritePlan("merge", outputs, replaces=replaces)


def plan_split(
    source: Source, out_dir: Path, max_shard_size: int, *, on_conflict: str = "error"
) -> WritePlan:
    """Aligned shards of at most ``max_shard_size`` bytes each (header included) plus an index.

    Tensors are packed greedily in output order (descending alignment, then name), and a
    shard's header is kept under the 100 MB safetensors readers accept (thousands of tensors
    with long names). A tensor that does not fit under the limit even alone (its bytes plus
    the header, which takes at least one 16 KiB page) gets a shard of its own that is larger,
    as transformers does.

    Raises:
        EmptySourceError: ``source`` has no tensors (an index would name no shard, and a
            loader reading it would see no file at all).
        InvalidSizeError: ``max_shard_size`` is not larger than one header page (or than the
            ``__metadata__`` every shard's header repeats), so no shard could hold any tensor
            data within it.
        OutputNotADirectoryError: ``out_dir`` is a file.
        OutputHeaderTooLargeError: the ``__metadata__`` every shard repeats leaves no room
            for even one tensor's entry under the readers' header limit.
        MetadataConflictError: see :func:`~.sources.merge_metadata`.
    """
    require_directory(out_dir)
    if not source.tensors:
        raise EmptySourceError(
            f"{source.path or out_dir}: has no tensors, so there is nothing to split (an index "
            "could name no shard); copy the file as it is, or merge it into one file"
        )
    if max_shard_size <= PAGE_SIZE:
        raise InvalidSizeError(
            f"a max shard size of {max_shard_size} byte{'s' * (max_shard_size != 1)} leaves "
            f"no room for tensor data: each aligned shard's header takes {PAGE_SIZE // 1024} KiB; "
            "give more (e.g. 5GB)"
        )
    metadata = merge_metadata(source.headers, on_conflict)
    digits = len(str(max_shard_size))
    meta_bytes = len(orjson.dumps({"__metadata__": metadata})) if metadata else 2
    if _padded(meta_bytes) >= max_shard_size:
        raise InvalidSizeError(
            f"the checkpoint's __metadata__ takes {meta_bytes} bytes, which every shard's "
            f"header repeats: a max shard size of {max_shard_size} bytes leaves no room for "
            f"tensor data; give more than {_padded(meta_bytes)} (e.g. 5GB)"
        )
    groups: list[list[TensorInfo]] = []
    current: list[TensorInfo] = []
    data = header_raw = 0
    for info in sorted(source.tensors.values(), key=order_key):
        entry = _entry_bound(info, digits)
        header = _padded(meta_bytes + header_raw + entry)
        if current and (
            header + data + info.nbytes > max_shard_size or header - 8 > MAX_HEADER_SIZE
        ):
            groups.append(current)
            current, data, header_raw = [], 0, 0
        current.append(info)
        data += info.nbytes
        header_raw += entry
    if current:
        groups.append(current)
    n = len(groups)
    outputs = [
        _output(out_dir / shard_name(i, n), source, group, metadata, "split")
        for i, group in enumerate(groups, 1)
    ]
    weight_map = {t.name: o.path.name for o in outputs for t in o.tensors}
    total = sum(o.data_size for o in outputs)
    index_path = out_dir / INDEX_NAME
    if not any(_is_source(o.path, source) for o in outputs):  # else execute names that shard
        _refuse_own_index(index_path, source, "split")
    return WritePlan(
        "split",
        outputs,
        replaces=_other_checkpoint(out_dir, outputs, source, "split", writes_index=True),
        abandoned=_abandoned_shards(out_dir, {o.path.name for o in outputs}),
        index_path=index_path,
        index=index_bytes(weight_map, total, source.files.index_metadata),
    )


def _entry_bound(info: TensorInfo, digits: int) -> int:
    """Upper bound of a tensor's header entry length (offsets of ``digits`` digits, a comma)."""
    entry = {info.name: {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [0, 0]}}
    return len(orjson.dumps(entry)) - 2 - 2 + 2 * digits + 1


def _padded(raw: int) -> int:
    return -(-(8 + raw) // PAGE_SIZE) * PAGE_SIZE


def require_safetensors_name(path: Path) -> None:
    """Refuse an output file whose name doesn't end with ``.safetensors``.

    Raises:
        OutputNameError: ``mx.load`` picks the format by the extension, and mlx-lm globs for
            ``*.safetensors``: such a file would be written and then never read.
    """
    if not path.name.endswith(".safetensors"):
        raise OutputNameError(
            f"{path}: an output file must end with .safetensors (mx.load and mlx-lm read no "
            f"other name); name it {path.name}.safetensors, or end the path with / to write "
            "into a directory"
        )


def plan_align(source: Source, out: str | os.PathLike | None) -> WritePlan:
    """Each source file rewritten aligned, same name, same tensors and metadata; index too.

    Args:
        source: The checkpoint.
        out: ``None`` to replace the files in place. For a source given as one
            ``.safetensors`` file, a file path, or a directory when it exists or ends with
            ``/`` (the file keeps its name there); for any other source, a directory. An
            ``out`` that is the source itself also rewrites in place.

    Raises:
        OutputNotADirectoryError: the output directory is a file, or ``out`` names a
            ``.safetensors`` file for a source that is a directory or an index.
    """
    files = source.files
    in_place = out is None
    single = source.path is not None and source.path.is_file() and files.index_path is None
    if in_place:
        out_dir = files.root
        targets = {f: f for f in files.files}
    elif single:
        as_dir = names_directory(out)
        out = Path(out)
        target = out / files.files[0].name if as_dir else out
        out_dir = target.parent
        targets = {files.files[0]: target}
        in_place = _same_entry(target, files.files[0])
        if not in_place:
            require_safetensors_name(target)
    else:
        out_dir = Path(out)
        require_directory_name(
            out_dir, f"{files.root} is a checkpoint directory, which align writes as a directory"
        )
        targets = {f: out_dir / Path(f).relative_to(files.root) for f in files.files}
        in_place = _same_dir(out_dir, files.root)
    require_directory(out_dir)
    outputs, unchanged = [], []
    for header in source.headers:
        tensors = list(header.tensors.values())
        plan = _output(targets[header.path], source, tensors, header.metadata, "align")
        if in_place and _same_layout(header, plan):
            unchanged.append(header.path)
            continue
        outputs.append(plan)
    replaces = (
        []
        if in_place
        else _other_checkpoint(
            out_dir, outputs, source, "align", writes_index=files.index_path is not None
        )
    )
    index_path = index = None
    if files.index_path is not None:
        weight_map = {
            name: os.path.relpath(path, files.index_path.parent)
            for name, path in source.shard_of.items()
        }
        total = sum(h.data_size for h in source.headers)
        index_path = out_dir / files.index_path.name
        same = (
            in_place
            and files.index_metadata.get("total_size") == total
            and files.weight_map is not None
        )
        if not same:
            index = index_bytes(weight_map, total, files.index_metadata)
        else:
            index_path = None
    return WritePlan("align", outputs, index_path, index, in_place, unchanged, replaces)


def _same_entry(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name the same file: the same entry (through symlinked directories too),
    or another name of it (``Model.safetensors`` on a case-insensitive APFS volume, a hard
    link). A symlink is not its target: aligning a Hugging Face snapshot link onto its blob
    would rewrite the blob, so that still needs ``--force``."""
    same_name = (
        Path(os.path.realpath(a.parent)) / a.name == Path(os.path.realpath(b.parent)) / b.name
    )
    if same_name:
        return True
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _same_layout(header: FileHeader, plan: OutputPlan) -> bool:
    """True when the file on disk already starts with exactly the planned header."""
    if header.data_start != plan.data_start:
        return False
    with open(header.path, "rb") as f:
        return f.read(plan.data_start) == plan.header
