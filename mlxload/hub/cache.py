"""The Hugging Face cache layout, as huggingface_hub and mlx-lm read it.

``<cache>/models--org--name/blobs/<sha256-or-git-sha1>`` holds content,
``snapshots/<commit>/<path>`` are relative symlinks to blobs, ``refs/<revision>`` holds a
commit hash. mlxload adds two things of its own, both ignored by huggingface_hub:
``blobs/<name>.mlxload-partial`` (a download in progress, resumable) and
``mlxload/<commit>.json`` (the tree listing, so offline use can name what is missing).
Locks live where huggingface_hub puts its own (``<cache>/.locks/models--org--name/<name>.lock``)
so the two libraries never write the same blob at once.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from mlxload.hub.listing import RemoteFile
from mlxload.work_names import work_path

__all__ = [
    "COMMIT_RE",
    "RepoCache",
    "cache_root",
    "default_cache_dir",
    "files_in",
    "in_hf_cache",
    "unfinished_downloads",
]

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
PARTIAL_SUFFIX = ".mlxload-partial"


def files_in(snapshot: Path) -> list[str]:
    """Repository paths (``a/b.json``) of the files a local snapshot holds, sorted; none for a
    snapshot directory that doesn't exist."""
    if not snapshot.is_dir():
        return []
    return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())


def in_hf_cache(path: Path) -> bool:
    """Whether ``path`` lies in a Hugging Face cache repo (``models--org--name/snapshots/...``),
    whichever cache directory that is: its files are links into content-addressed blobs that
    must never be rewritten. Links are followed: a link to a snapshot is the snapshot."""
    for parent in Path(path).resolve().parents:
        if parent.name.startswith(("models--", "datasets--")) and (parent / "blobs").is_dir():
            return True
    return False


def unfinished_downloads(root: Path) -> dict[str, int]:
    """Bytes held by mlxload's unfinished downloads in a hub cache, per repository.

    An interrupted download stays resumable for as long as its partial blob is kept; one that
    is never run again (or whose file changed upstream, giving it another blob name) would
    hold its space for ever, so ``mlxload doctor`` names them.

    Args:
        root: The hub cache directory.

    Returns:
        ``{"org/name": bytes}`` for each model repository with partial blobs, sorted by name.
    """
    found: dict[str, int] = {}
    for partial in sorted(root.glob(f"models--*/blobs/*{PARTIAL_SUFFIX}")):
        with contextlib.suppress(OSError):  # finished or removed meanwhile
            size = partial.stat().st_size
            repo_id = "/".join(partial.parent.parent.name.split("--")[1:])
            found[repo_id] = found.get(repo_id, 0) + size
    return found


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` as given (``~`` expanded), else :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def default_cache_dir() -> Path:
    """The hub cache huggingface_hub uses (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class RepoCache:
    """Paths and small operations for one model repository in a hub cache.

    Attributes:
        root: The hub cache directory (``HF_HUB_CACHE``).
        repo_id: ``org/name``.
    """

    root: Path
    repo_id: str

    @property
    def folder_name(self) -> str:
        """``models--org--name``."""
        return "--".join(["models", *self.repo_id.split("/")])

    @property
    def storage(self) -> Path:
        """The repository's folder in the cache."""
        return self.root / self.folder_name

    def snapshot(self, commit: str) -> Path:
        """The snapshot directory of ``commit``."""
        return self.storage / "snapshots" / commit

    def blob(self, name: str) -> Path:
        """The final path of a blob."""
        return self.storage / "blobs" / name

    def partial(self, name: str) -> Path:
        """Where an unfinished download of blob ``name`` accumulates (resumable)."""
        return self.storage / "blobs" / f"{name}{PARTIAL_SUFFIX}"

    def lock(self, name: str) -> Path:
        """The lock file guarding blob ``name`` (shared with huggingface_hub)."""
        return self.root / ".locks" / self.folder_name / f"{name}.lock"

    def manifest(self, commit: str) -> Path:
        """mlxload's record of the tree listing at ``commit``."""
        return self.storage / "mlxload" / f"{commit}.json"

    def read_ref(self, revision: str) -> str | None:
        """The commit a branch/tag was last seen at, or ``revision`` itself if it is a commit."""
        if COMMIT_RE.match(revision):
            return revision
        try:
            commit = (self.storage / "refs" / revision).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return commit if COMMIT_RE.match(commit) else None

    def write_ref(self, revision: str, commit: str) -> None:
        """Record that ``revision`` points at ``commit`` (atomically; no-op for a commit hash)."""
        if revision == commit or self.read_ref(revision) == commit:
            return
        _atomic_write_text(self.storage / "refs" / revision, commit)

    def link(self, commit: str, path: str, blob_name: str) -> Path:
        """Point ``snapshots/<commit>/<path>`` at a blob (relative symlink, copy if unsupported).

        Call with the blob's download lock held.

        Returns:
            The snapshot path of the file.
        """
        dst = self.snapshot(commit).joinpath(*path.split("/"))
        dst.parent.mkdir(parents=True, exist_ok=True)
        # A run killed between creating its temporary link and the rename left one behind;
        # callers hold the blob's lock, so no live run is using a temporary of this name.
        # (``.NAME.<uuid>.tmp`` is what earlier versions named them.)
        tmp = work_path(dst, "link")
        for stale in [tmp, *dst.parent.glob(f".{glob.escape(dst.name)}.*.tmp")]:
            with contextlib.suppress(OSError):
                stale.unlink()
        src = self.blob(blob_name)
        rel = os.path.relpath(src, dst.parent)
        try:
            os.symlink(rel, tmp)
        except OSError:  # no symlinks here (some filesystems): a full copy, as huggingface_hub does
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return dst

    def has_file(self, commit: str, path: str) -> bool:
        """Whether the snapshot holds ``path`` (a symlink to an existing blob or a real file)."""
        return self.snapshot(commit).joinpath(*path.split("/")).is_file()

    def holds(self, commit: str, f: RemoteFile) -> bool:
        """Whether the snapshot holds ``f`` at its listed size (a file cut short by a full
        disk, or by a copy, is not there)."""
        path = self.snapshot(commit).joinpath(*f.path.split("/"))
        try:
            return path.is_file() and path.stat().st_size == f.size
        except OSError:
            return False

    def write_manifest(self, commit: str, files: list[RemoteFile]) -> None:
        """Save the tree listing of ``commit`` (best effort: a read-only cache is fine)."""
        doc = {"format": 1, "files": [f.to_json() for f in files]}
        with contextlib.suppress(OSError):
            _atomic_write_text(self.manifest(commit), json.dumps(doc, indent=1))

    def read_manifest(self, commit: str) -> list[RemoteFile] | None:
        """The tree listing saved by :meth:`write_manifest`, or None."""
        try:
            doc = json.loads(self.manifest(commit).read_text(encoding="utf-8"))
            if doc.get("format") != 1:
                return None
            return [RemoteFile.from_json(f) for f in doc["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
