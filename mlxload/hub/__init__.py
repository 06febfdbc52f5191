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

from typing import TYPE_CHECKING

from mlxload._lazy import lazy_getattr
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

if TYPE_CHECKING:  # pragma: no cover
    from mlxload.hub.locate import resolve
    from mlxload.hub.snapshot import download

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


_LAZY = {"download": "mlxload.hub.snapshot", "resolve": "mlxload.hub.locate"}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
