"""``mlxload.hub.resolve``: turn a model spec into a local directory, downloading if needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlxload.hub.errors import DownloadError, OfflineError, RepoNotFoundError
from mlxload.hub.spec import HF_SCHEME, is_hub_spec

__all__ = ["resolve"]


def resolve(spec: str | Path, **kwargs: Any) -> Path | None:
    """Where to load ``spec`` from.

    Args:
        spec: A local path, ``hf://org/repo[@revision]``, or ``org/repo`` (a Hub repository
            when no such local path exists).
        **kwargs: Passed to :func:`mlxload.hub.download` (``revision``, ``allow_patterns``,
            ``workers``, ``progress``, ``token``, ``cache_dir``, ``local_files_only``).

    Returns:
        None when ``spec`` is a local path (the caller opens it as is), else the snapshot
        directory in the Hugging Face cache (downloaded, or found there when offline).

    Raises:
        HubError: (subclass) as :func:`mlxload.hub.download`; HubSpecError for a malformed
            ``hf://`` spec.
    """
    if not is_hub_spec(spec):
        return None
    from mlxload.hub.snapshot import download

    try:
        return download(str(spec), **kwargs)
    except (RepoNotFoundError, OfflineError, DownloadError) as e:  # (the Hub unreachable too)
        if not str(spec).startswith(HF_SCHEME) and _unknown_here(spec, kwargs.get("cache_dir")):
            # A bare org/name was taken for the Hub only because no such path exists here:
            # it may as well be a mistyped local path.
            e.args = (f"{e} (no local path {str(spec)!r} exists either)",)
        raise


def _unknown_here(spec: str | Path, cache_dir: Any) -> bool:
    """Whether nothing of this repo is in the Hub cache (so it may not be a repo at all)."""
    from mlxload.hub.cache import RepoCache, cache_root
    from mlxload.hub.spec import parse_spec

    return not RepoCache(cache_root(cache_dir), parse_spec(str(spec)).repo_id).storage.exists()
