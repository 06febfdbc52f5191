"""Choose which repository files a download fetches.

By default only what loading needs: the safetensors shards the index names (or the single
``model.safetensors`` / the root ``*.safetensors``), the root ``*.json`` configs and tokenizer
files. Duplicate weights in other formats (``*.bin``, ``*.pt``, ``*.gguf``, ...) are never
fetched unless the caller's own ``allow_patterns`` ask for them.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from mlxload.hub.errors import EntryNotFoundError, HubError
from mlxload.hub.listing import RemoteFile

__all__ = [
    "EXCLUDED_PATTERNS",
    "INDEX_NAME",
    "TOKENIZER_PATTERNS",
    "default_selection",
    "index_files",
    "match_patterns",
    "select_files",
    "shards_from_index",
]

INDEX_NAME = "model.safetensors.index.json"
TOKENIZER_PATTERNS = (
    "tokenizer*",
    "tokenizer.model",
    "tiktoken.model",
    "*.tiktoken",
    "spiece.model",
    "sentencepiece*.model",
    "*.txt",
    "*.jinja",
    "vocab*",
    "merges*",
)
EXCLUDED_PATTERNS = (
    "*.bin",
    "*.pt",
    "*.pth",
    "*.gguf",
    "*.onnx",
    "*.onnx_data",
    "*.h5",
    "*.msgpack",
    "*.ckpt",
    "*.ot",
    "*.tflite",
)


def match_patterns(path: str, patterns: Iterable[str]) -> bool:
    """Whether ``path`` matches any glob pattern (``dir/`` means everything under ``dir``)."""
    for pat in patterns:
        if pat.endswith("/"):
            pat += "*"
        if fnmatch.fnmatchcase(path, pat):
            return True
    return False


def _is_root(path: str) -> bool:
    return "/" not in path


def index_files(files: Sequence[RemoteFile]) -> list[RemoteFile]:
    """The safetensors index files a default download starts from.

    ``model.safetensors.index.json`` when present, else any root ``*.safetensors.index.json``.
    """
    by_path = {f.path: f for f in files}
    if INDEX_NAME in by_path:
        return [by_path[INDEX_NAME]]
    return [f for f in files if _is_root(f.path) and f.path.endswith(".safetensors.index.json")]


def shards_from_index(index_name: str, data: bytes) -> list[str]:
    """The shard file names an index's ``weight_map`` names, in first-seen order.

    Raises:
        HubError: The index is not JSON or has no ``weight_map`` object.
    """
    try:
        doc = json.loads(data)
        weight_map = doc["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise HubError(f"{index_name}: not a valid safetensors index ({e})") from e
    seen: dict[str, None] = {}
    for shard in weight_map.values():
        seen.setdefault(str(shard), None)
    return list(seen)


def select_files(
    files: Sequence[RemoteFile],
    *,
    allow_patterns: Sequence[str] | None = None,
    shards: Sequence[str] | None = None,
) -> list[RemoteFile]:
    """The files a download fetches.

    Args:
        files: The repository's tree listing.
        allow_patterns: When given, exactly the files matching one of these globs.
        shards: Shard paths named by the index (relative to the index's folder, i.e. the root);
            None when the repository has no index.

    Returns:
        The selected files, in listing order.

    Raises:
        EntryNotFoundError: The index names a shard the repository does not contain.
    """
    if allow_patterns is not None:
        return [f for f in files if match_patterns(f.path, allow_patterns)]
    by_path = {f.path: f for f in files}
    if shards is not None:
        missing = [s for s in shards if s not in by_path]
        if missing:
            raise EntryNotFoundError(
                f"the safetensors index names {len(missing)} shard(s) the repository does not "
                f"contain: {', '.join(missing[:5])}"
            )
        weights = set(shards)
    elif "model.safetensors" in by_path:
        weights = {"model.safetensors"}
    else:
        weights = {f.path for f in files if _is_root(f.path) and f.path.endswith(".safetensors")}
    chosen = []
    for f in files:
        if f.path in weights:
            chosen.append(f)
        elif not _is_root(f.path) or match_patterns(f.path, EXCLUDED_PATTERNS):
            continue
        elif f.path.endswith(".json") or match_patterns(f.path, TOKENIZER_PATTERNS):
            if f.path.endswith(".safetensors"):
                continue
            chosen.append(f)
    return chosen


def default_selection(files: Sequence[RemoteFile], root: Path) -> list[RemoteFile]:
    """:func:`select_files` without patterns, the shards read from the index files under
    ``root`` (which must already be there: see :func:`index_files`)."""
    shards: list[str] = []
    for index in index_files(files):
        shards += shards_from_index(index.path, (root / index.path).read_bytes())
    return select_files(files, shards=list(dict.fromkeys(shards)) or None)
