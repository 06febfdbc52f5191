"""Models from the Hugging Face Hub: ``hf://org/repo[@revision]`` specs, downloads, cache.

Importing this package is cheap: huggingface_hub is imported only when a download or a
cache look-up actually runs.

Example:
    >>> from mlxload import hub
    >>> hub.parse_spec("hf://mlx-community/Qwen3-0.6B-4bit@main")
    HubSpec(repo_id='mlx-community/Qwen3-0.6B-4bit', revision='main')
    >>> path = hub.resolve("hf://mlx-community/Qwen3-0.6B-4bit")  # doctest: +SKIP
"""

from __future__ import annotations

from mlxload.hub.errors import (
    AuthError,
    DownloadError,
    EntryNotFoundError,
    GatedRepoError,
    HubError,
    HubSpecError,
    IntegrityError,
    OfflineError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from mlxload.hub.spec import HubSpec, is_hub_spec, parse_spec

__all__ = [
    "AuthError",
    "DownloadError",
    "EntryNotFoundError",
    "GatedRepoError",
    "HubError",
    "HubSpec",
    "HubSpecError",
    "IntegrityError",
    "OfflineError",
    "RepoNotFoundError",
    "RevisionNotFoundError",
    "download",
    "is_hub_spec",
    "parse_spec",
    "resolve",
]


def __getattr__(name: str):  # download/resolve pull in threads, filelock, huggingface_hub
    if name == "download":
        from mlxload.hub.download import download

        return download
    if name == "resolve":
        from mlxload.hub.resolve import resolve

        return resolve
    raise AttributeError(f"module 'mlxload.hub' has no attribute {name!r}")
