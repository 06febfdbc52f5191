"""What the Hub says a repository file is: path, size, and the hashes to check it against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RemoteFile"]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repository at a commit, as the Hub's tree listing describes it.

    Attributes:
        path: Path inside the repository, ``/``-separated.
        size: Size in bytes of the real content (for LFS files, the LFS object's size).
        blob_id: The git blob sha1 of the entry (for LFS files, of the pointer file).
        sha256: The LFS object's sha256, or None for a plain git file.
    """

    path: str
    size: int
    blob_id: str
    sha256: str | None = None

    @property
    def is_lfs(self) -> bool:
        """Whether the content is an LFS object (checked by sha256) rather than a git blob."""
        return self.sha256 is not None

    @property
    def blob_name(self) -> str:
        """The name of the blob in the cache: the ETag the Hub serves (sha256 or git sha1)."""
        return self.sha256 if self.sha256 is not None else self.blob_id

    @classmethod
    def from_hf(cls, entry: Any) -> RemoteFile:
        """Build from a ``huggingface_hub.hf_api.RepoFile``."""
        lfs = entry.lfs
        if lfs is not None:
            return cls(entry.path, int(lfs.size), entry.blob_id, sha256=lfs.sha256)
        return cls(path=entry.path, size=int(entry.size), blob_id=entry.blob_id)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        out: dict[str, Any] = {"path": self.path, "size": self.size, "blob_id": self.blob_id}
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemoteFile:
        """Inverse of :meth:`to_json`."""
        return cls(
            path=str(data["path"]),
            size=int(data["size"]),
            blob_id=str(data["blob_id"]),
            sha256=data.get("sha256"),
        )
