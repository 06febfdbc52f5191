"""What the Hub says a repository file is: path, size, and the hashes to check it against."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mlxload.hub.errors import HubError

__all__ = ["RemoteFile"]

_HEX_ID = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")


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

    def __post_init__(self) -> None:
        # Paths and hashes become cache paths: a hostile or broken listing must not be able
        # to name a place outside the snapshot or blobs folder.
        parts = self.path.split("/")
        if (
            not self.path
            or self.path.startswith("/")
            or "\\" in self.path
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise HubError(f"the Hub listed a file with an unsafe path: {self.path!r}")
        for label, value in (("blob id", self.blob_id), ("sha256", self.sha256)):
            if value is not None and not _HEX_ID.match(value):
                raise HubError(f"the Hub listed {self.path!r} with a malformed {label}: {value!r}")

    @property
    def is_lfs(self) -> bool:
        """Whether the content is an LFS object (checked by sha256) rather than a git blob."""
        return self.sha256 is not None

    @property
    def content_hash(self) -> str:
        """What the content is checked against: the LFS sha256, else the git blob sha1."""
        return self.sha256 if self.sha256 is not None else self.blob_id

    @property
    def hash_kind(self) -> str:
        """``"sha256"`` or ``"git sha1"``: the kind of :attr:`content_hash`, for messages."""
        return "sha256" if self.is_lfs else "git sha1"

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
