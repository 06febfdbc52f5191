"""Answer from the cache alone: find a snapshot and name exactly what it lacks."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from mlxload.hub.cache import RepoCache, cache_root, files_in
from mlxload.hub.errors import HubError, OfflineError
from mlxload.hub.listing import RemoteFile
from mlxload.hub.select import index_files, match_patterns, select_files, shards_from_index
from mlxload.hub.spec import DEFAULT_REVISION

__all__ = ["cached_snapshot", "missing_files", "offline_mode"]

_TRUE = {"1", "on", "yes", "true"}


def offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is on, now or at import."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return True
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in _TRUE


def _listing(cache: RepoCache, commit: str) -> list[RemoteFile] | None:
    files = cache.read_manifest(commit)
    if files is not None:
        return files
    try:  # a listing huggingface_hub cached (snapshot_download writes one)
        from huggingface_hub import get_cached_repo_tree

        tree = get_cached_repo_tree(cache.repo_id, revision=commit, cache_dir=cache.root)
    except Exception:
        return None
    return [RemoteFile(path=f.path, size=int(f.size), blob_id=f.blob_id) for f in tree]


def _index_shards(cache: RepoCache, commit: str, index_names: Sequence[str]) -> list[str]:
    shards: dict[str, None] = {}
    for name in index_names:
        path = cache.snapshot(commit) / name
        try:
            data = path.read_bytes()
        except OSError:
            continue
        try:
            shards.update(dict.fromkeys(shards_from_index(name, data)))
        except HubError:
            continue
    return list(shards)


def missing_files(cache: RepoCache, commit: str, allow_patterns: Sequence[str] | None) -> list[str]:
    """Paths a download with these patterns would fetch that the snapshot lacks.

    Uses the tree listing saved at download time (mlxload's or huggingface_hub's); without
    one, checks what the snapshot itself implies (the shards its index names).

    Args:
        cache: The repository's cache.
        commit: The snapshot's commit.
        allow_patterns: As given to :func:`mlxload.hub.download`.

    Returns:
        The missing paths, empty when the snapshot is complete.
    """
    return _missing(cache, commit, allow_patterns, _listing(cache, commit))


def _missing(
    cache: RepoCache,
    commit: str,
    allow_patterns: Sequence[str] | None,
    files: list[RemoteFile] | None,
) -> list[str]:
    snap = cache.snapshot(commit)
    if files is not None:
        if allow_patterns is not None:
            wanted = select_files(files, allow_patterns=allow_patterns)
        else:
            indexes = [f.path for f in index_files(files)]
            absent = [i for i in indexes if not cache.has_file(commit, i)]
            if absent:  # which shards are needed is unknown until the index is there
                return absent
            listed = {f.path for f in files}
            shards = _index_shards(cache, commit, indexes)
            unlisted = [s for s in shards if s not in listed]
            wanted = select_files(files, shards=[s for s in shards if s in listed] or None)
            return unlisted + [f.path for f in wanted if not cache.holds(commit, f)]
        return [f.path for f in wanted if not cache.holds(commit, f)]
    present = files_in(snap)
    if allow_patterns is not None:
        if any(match_patterns(p, allow_patterns) for p in present):
            return []
        return [f"(any file matching {', '.join(allow_patterns)})"]
    indexes = [p for p in present if "/" not in p and p.endswith(".safetensors.index.json")]
    if indexes:
        return [s for s in _index_shards(cache, commit, indexes) if not cache.has_file(commit, s)]
    if any("/" not in p and p.endswith(".safetensors") for p in present):
        return []
    return ["*.safetensors (the cached snapshot has no weights)"]


def cached_snapshot(
    cache: RepoCache, revision: str, allow_patterns: Sequence[str] | None, reason: str
) -> Path:
    """The complete cached snapshot of ``revision``, without any network request.

    Args:
        cache: The repository's cache.
        revision: Branch, tag or commit.
        allow_patterns: As given to :func:`mlxload.hub.download`.
        reason: Why the Hub is not asked (for the message), e.g. ``"offline mode is on"``.

    Returns:
        The snapshot directory.

    Raises:
        OfflineError: The revision was never downloaded, or files are missing (named).
    """
    where = f"hf://{cache.repo_id}@{revision}"
    commit = cache.read_ref(revision)
    if commit is None or not cache.snapshot(commit).is_dir():
        raise OfflineError(
            f"{where} is not in the cache ({cache.root}) and {reason}: run "
            f"{download_command(cache, revision)} with network access first"
        )
    listing = _listing(cache, commit)
    missing = _missing(cache, commit, allow_patterns, listing)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise OfflineError(
            f"{where} (commit {commit[:12]}) is only partly cached in {cache.storage} and "
            f"{reason}: missing {len(missing)} file(s): {shown}. Run "
            f"{download_command(cache, revision)} with network access to complete it"
        )
    snapshot = cache.snapshot(commit)
    if listing is None and not _whole_without_listing(snapshot, allow_patterns):
        weights = sorted(p for p in files_in(snapshot) if p.endswith(".safetensors"))
        warnings.warn(
            f"{where} (commit {commit[:12]}): the cache holds no file listing for this snapshot "
            "(its files were fetched one by one, e.g. with hf_hub_download), so whether it is "
            f"the whole model can't be checked while {reason}; using the {len(weights)} "
            f"weights file(s) there ({', '.join(weights[:3])}{' ...' * (len(weights) > 3)}). "
            f"{download_command(cache, revision)} with network access completes it",
            stacklevel=3,
        )
    return snapshot


def _whole_without_listing(snapshot: Path, allow_patterns: Sequence[str] | None) -> bool:
    """Whether a snapshot is known whole without the repository's file listing: its index
    names every shard (checked by the caller), or it is the one standard weights file."""
    if allow_patterns is not None:
        return False
    root = [p for p in files_in(snapshot) if "/" not in p]
    if any(p.endswith(".safetensors.index.json") for p in root):
        return True
    return [p for p in root if p.endswith(".safetensors")] == ["model.safetensors"]


def download_command(cache: RepoCache, revision: str) -> str:
    """The ``mlxload download`` command that fills this cache with ``revision``."""
    spec = cache.repo_id if revision == DEFAULT_REVISION else f"{cache.repo_id}@{revision}"
    command = f"`mlxload download {spec}"
    if Path(cache.root) != Path(cache_root(None)):
        command += f" --cache-dir {cache.root}"
    return command + "`"
