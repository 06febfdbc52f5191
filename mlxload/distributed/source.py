"""Where a rank's checkpoint comes from, opening (and for ``hf://`` downloading) only the
shards that hold the tensors it needs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from mlxload.checkpoint import Checkpoint
from mlxload.distributed.blocks import Block
from mlxload.distributed.reader import block_ranges
from mlxload.errors import CheckpointNotFoundError, MissingShardError, TensorNotFoundError
from mlxload.hub.range_fetch import RangeFetch
from mlxload.hub.spec import is_hub_spec, parse_spec
from mlxload.shards import INDEX_NAME, MODEL_SHARDS, CheckpointFiles, checkpoint_files, read_index

__all__ = ["METADATA_PATTERNS", "RankSource", "open_source"]

METADATA_PATTERNS = [
    "*.json",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jsonl",
    "*.jinja",
]
"""Everything but weights (the list mlx-lm's ``sharded_load`` fetches first)."""


def _read_index(index: Path) -> tuple[dict[str, str], dict]:
    # A pipeline rank's Hub snapshot holds only its own shards: don't require the others.
    files = read_index(index, require_all=False)
    weight_map = {
        name: path.relative_to(files.root).as_posix() for name, path in files.weight_map.items()
    }
    return weight_map, files.index_metadata


class RankSource:
    """A checkpoint directory (local, or a Hub snapshot filled on demand) and its index.

    Attributes:
        root: Directory with ``config.json`` and the shards.
        spec: The ``hf://`` spec, or ``None`` for a local directory.
        index_path: The ``model.safetensors.index.json``, or ``None``.
        weight_map: Tensor name -> shard file name, or ``None`` without an index.
        index_metadata: The index's ``metadata`` (``total_size``).
        downloaded: Shard file names fetched from the Hub by this rank.

    With ``fetch="ranges"`` (Hub repos only) shards are not downloaded whole: :meth:`open`
    fetches their headers, and :meth:`fetch_blocks` the bytes of the blocks a rank reads
    (see :class:`~mlxload.hub.range_fetch.RangeFetch`).
    """

    def __init__(
        self,
        root: Path,
        spec: str | None,
        target: Path | None = None,
        *,
        fetch: str = "files",
        **hub_kwargs: object,
    ) -> None:
        self.root = root
        self._target = target or root
        self.spec = spec
        self._hub_kwargs = hub_kwargs
        self._ranges: RangeFetch | None = None
        if fetch == "ranges" and spec is not None:
            self._ranges = RangeFetch(root, parse_spec(spec).repo_id, **hub_kwargs)
        index = root / INDEX_NAME
        self.index_path: Path | None = index if index.is_file() else None
        self.weight_map: dict[str, str] | None = None
        self.index_metadata: dict = {}
        if self.index_path is not None:
            self.weight_map, self.index_metadata = _read_index(index)
        self.downloaded: list[str] = []
        self._names: list[str] | None = None  # what open() was last asked for

    def tensor_names(self) -> list[str] | None:
        """Every tensor name (from the index), or ``None`` when there is no index."""
        return list(self.weight_map) if self.weight_map is not None else None

    def open(self, names: Iterable[str] | None = None) -> Checkpoint:
        """A :class:`Checkpoint` over the shards holding ``names`` (all shards by default).

        For a Hub snapshot the missing shards among those are downloaded first; other shards
        are neither downloaded nor opened.

        Raises:
            MissingShardError: a needed local shard is missing.
            TensorNotFoundError: a name the index doesn't list.
            HubError: the download failed.
        """
        self._names = names = None if names is None else list(names)
        if self._ranges is not None:
            return self._open_ranges(names)
        if self.weight_map is None:
            if self.spec is not None:
                self._fetch(["*.safetensors"])
            files = checkpoint_files(self._target, prefer=MODEL_SHARDS)  # as load_model
            return Checkpoint(files, cache=False)
        wanted = self._wanted(names)
        shard_names = sorted(set(wanted.values()))
        if self.spec is not None:
            missing = [s for s in shard_names if not (self.root / s).is_file()]
            if missing:
                self._fetch(shard_names)
                self.downloaded = missing
        paths = {s: self.root / s for s in shard_names}
        absent = [s for s, p in paths.items() if not p.is_file()]
        if absent:
            raise MissingShardError(
                f"{self.root}: shard(s) {', '.join(absent)} named by {INDEX_NAME} are missing"
            )
        files = CheckpointFiles(
            root=self.root,
            files=list(paths.values()),
            weight_map={n: paths[s] for n, s in wanted.items()},
            index_path=self.index_path,
            index_metadata=self.index_metadata,
        )
        return Checkpoint(files, cache=False)

    def _wanted(self, names: Iterable[str] | None) -> dict[str, str]:
        """Tensor name -> shard, for ``names`` (all by default), from the index."""
        if names is None:
            return self.weight_map
        unknown = [n for n in names if n not in self.weight_map]
        if unknown:
            raise TensorNotFoundError.among(
                f"{self.index_path}: the index lists no tensor named {unknown[0]!r}",
                unknown[0],
                self.weight_map,
            )
        return {n: self.weight_map[n] for n in names}

    def repo_path(self, path: Path) -> str:
        """A shard's name: its path in the repository for a Hub source, else ``path``."""
        if self._ranges is not None:
            name = self._ranges.repo_path(path)
            if name is not None:
                return name
        if self.spec is not None and path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        return str(path)

    @property
    def fetched_bytes(self) -> int:
        """Bytes fetched as ranges (0 unless ``fetch="ranges"``)."""
        return self._ranges.fetched_bytes if self._ranges is not None else 0

    def fetch_blocks(self, ckpt: Checkpoint, blocks: Mapping[str, Block]) -> Checkpoint:
        """With ``fetch="ranges"``: fetch the bytes :func:`read_blocks` will read for
        ``blocks`` and return ``ckpt`` opened again over the filled files; else ``ckpt``.

        Raises:
            HubError: as :class:`~mlxload.hub.range_fetch.RangeFetch`.
        """
        if self._ranges is None:
            return ckpt
        wanted: dict[Path, list[tuple[int, int]]] = {}
        for block in blocks.values():
            for path, pieces in block_ranges(ckpt, block):
                wanted.setdefault(path, []).extend((o, o + n) for o, n in pieces)
        ckpt.close()  # its files are about to change under it
        self._ranges.fetch(wanted)
        return self.open(self._names)

    def close(self) -> None:
        """Delete range-fetched files (arrays read from them own their memory)."""
        if self._ranges is not None:
            self._ranges.close()

    def _open_ranges(self, names: Iterable[str] | None) -> Checkpoint:
        ranges = self._ranges
        if self.weight_map is None:
            shards = _unindexed_shards(ranges, self.root)
            if not shards:
                raise CheckpointNotFoundError(f"{self.spec}: the repository has no *.safetensors")
            paths = ranges.open_shards(shards)
            weight_map = None
        else:
            wanted = self._wanted(names)
            paths = ranges.open_shards(sorted(set(wanted.values())))
            weight_map = {n: paths[s] for n, s in wanted.items()}
        files = CheckpointFiles(
            root=self.root,
            files=list(paths.values()),
            weight_map=weight_map,
            index_path=self.index_path,
            index_metadata=self.index_metadata,
        )
        readable = {p: ranges.have[p] for p in paths.values() if p in ranges.have}
        return Checkpoint(files, cache=False, readable=readable)

    def _fetch(self, shard_patterns: list[str]) -> None:
        from mlxload.hub import download

        download(self.spec, allow_patterns=METADATA_PATTERNS + shard_patterns, **self._hub_kwargs)


def _unindexed_shards(ranges: RangeFetch, snapshot: Path) -> list[str]:
    """The weights of a repo without an index, chosen as a download chooses them
    (``model.safetensors`` if there is one, else every root ``*.safetensors``); from the cached
    snapshot when no listing was saved (a cache huggingface_hub filled)."""
    from mlxload.hub.select import select_files

    if ranges.files:
        chosen = select_files(list(ranges.files.values()))
        return [f.path for f in chosen if f.path.endswith(".safetensors")]
    names = sorted(p.name for p in snapshot.glob("*.safetensors") if p.is_file())
    return ["model.safetensors"] if "model.safetensors" in names else names


def open_source(
    path_or_hf: str | os.PathLike, *, fetch: str = "files", **hub_kwargs: object
) -> RankSource:
    """Locate a checkpoint; for a Hub repo download only its metadata (configs, index,
    tokenizer) now, the shards later through :meth:`RankSource.open`.

    Args:
        path_or_hf: A checkpoint directory, ``hf://org/repo[@rev]`` or ``org/repo``.
        fetch: For Hub repos, ``"files"`` (download the shards needed, whole) or ``"ranges"``
            (fetch only the bytes read; see :class:`RankSource`).
        **hub_kwargs: Passed to :func:`mlxload.hub.download` (``revision``, ``token`` ...).

    Raises:
        FileNotFoundError: a local path that doesn't exist.
        HubError: the metadata download failed.
    """
    if is_hub_spec(path_or_hf):
        from mlxload.hub import resolve

        spec = os.fspath(path_or_hf)
        root = resolve(spec, allow_patterns=METADATA_PATTERNS, **hub_kwargs)
        return RankSource(Path(root), spec, fetch=fetch, **hub_kwargs)
    root = Path(path_or_hf).absolute()  # shard paths are compared with absolute ones
    if not root.exists():
        raise CheckpointNotFoundError(f"{root}: no such file or directory", root)
    if root.is_file():
        return RankSource(root.parent, None, target=root)
    return RankSource(root, None)
