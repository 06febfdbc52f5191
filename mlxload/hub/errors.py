"""Errors mlxload raises about the Hugging Face Hub.

Every class derives from :class:`HubError` (itself an :class:`mlxload.errors.MlxloadError`), so
``except mlxload.MlxloadError`` also catches Hub failures. Messages say what went wrong *and*
what to do about it; no raw ``httpx``/``httpx2``/``huggingface_hub`` exception escapes
:mod:`mlxload.hub` (the original is kept as ``__cause__``).
"""

from __future__ import annotations

from mlxload.errors import MlxloadError

__all__ = [
    "AuthError",
    "DownloadError",
    "EntryNotFoundError",
    "GatedRepoError",
    "HubError",
    "HubSpecError",
    "IntegrityError",
    "OfflineError",
    "RepoNotFoundError",
    "RevisionNotFoundError",
]


class HubError(MlxloadError):
    """Base class of every Hub-related error mlxload raises."""


class HubSpecError(HubError, ValueError):
    """A model spec (``hf://org/repo[@revision]`` or ``org/repo``) is malformed."""


class RepoNotFoundError(HubError):
    """The repository does not exist on the Hub (or is private and no valid token was sent)."""


class RevisionNotFoundError(HubError):
    """The repository exists but the branch, tag or commit does not."""


class EntryNotFoundError(HubError):
    """A file listed for download is missing on the Hub."""


class AuthError(HubError):
    """The Hub refused access (401/403): missing, invalid or insufficient token."""


class GatedRepoError(AuthError):
    """The repository is gated and this account has not been granted access."""


class OfflineError(HubError):
    """Offline mode is on (or the Hub is unreachable) and a needed file is not in the cache."""


class DownloadError(HubError):
    """A transfer failed (connection dropped, retries exhausted, server error).

    Whatever was already received is kept; running the same download again resumes it.
    """


class IntegrityError(HubError):
    """Downloaded bytes do not match the hash the Hub lists for the file.

    Attributes:
        filename: The path of the file in the repository.
        expected: The hash the Hub lists (hex).
        actual: The hash of the bytes received (hex).
    """

    def __init__(self, message: str, *, filename: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.filename = filename
        self.expected = expected
        self.actual = actual
