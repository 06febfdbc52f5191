"""Parse model specs: ``hf://org/repo``, ``hf://org/repo@revision`` and bare ``org/repo``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlxload.hub.errors import HubSpecError

__all__ = [
    "DEFAULT_REVISION",
    "HF_SCHEME",
    "HubSpec",
    "check_revision",
    "is_hub_spec",
    "parse_spec",
]

DEFAULT_REVISION = "main"
"""The revision a spec without ``@revision`` names."""

HF_SCHEME = "hf://"

# The Hub's own rule for repo names: letters, digits, '-', '_', '.', at most 96 characters,
# no leading/trailing '-' or '.', no '--' or '..'.
_NAME = re.compile(r"^(?![-.])[A-Za-z0-9_.\-]{1,96}(?<![-.])$")


@dataclass(frozen=True)
class HubSpec:
    """A model on the Hub.

    Attributes:
        repo_id: ``"org/name"`` (or ``"name"`` for legacy un-namespaced models).
        revision: Branch, tag or commit hash; None means the default branch.
    """

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        suffix = f"@{self.revision}" if self.revision else ""
        return f"{HF_SCHEME}{self.repo_id}{suffix}"


def _check_name(part: str, spec: str) -> None:
    if not part:
        raise HubSpecError(f"invalid Hub spec {spec!r}: empty organisation or repository name")
    if not _NAME.match(part) or "--" in part or ".." in part:
        raise HubSpecError(
            f"invalid Hub spec {spec!r}: {part!r} is not a valid name (letters, digits, '-', '_', "
            "'.', at most 96 characters, not starting or ending with '-' or '.', no '--' or '..')"
        )


def check_revision(revision: str, where: str = "revision") -> None:
    """Refuse a revision that can't be a branch, tag or commit: it names a file under the
    cache's ``refs/``, so ``/etc/x`` or ``../x`` would be written outside the cache.

    Raises:
        HubSpecError: empty, whitespace, ``..``, a leading ``/``, a backslash or an empty
            ``a//b`` part.
    """
    if (
        not isinstance(revision, str)
        or not revision
        or any(c.isspace() for c in revision)
        or ".." in revision
        or "\\" in revision
        or revision.startswith("/")
        or "" in revision.split("/")
    ):
        raise HubSpecError(f"{where}: invalid revision {revision!r} (a branch, tag or commit)")


def parse_spec(spec: str) -> HubSpec:
    """Parse ``hf://org/repo[@revision]`` or ``org/repo[@revision]`` into a :class:`HubSpec`.

    Args:
        spec: The model spec.

    Returns:
        The repository id and revision (None when the spec names none).

    Raises:
        HubSpecError: The spec is empty, has the wrong number of path parts, an invalid name,
            or an empty revision.
    """
    if not isinstance(spec, str):
        raise HubSpecError(f"a Hub spec must be a string, got {type(spec).__name__}")
    body = spec.strip()
    if body.startswith(HF_SCHEME):
        body = body[len(HF_SCHEME) :]
    elif "://" in body:
        scheme = body.split("://", 1)[0]
        raise HubSpecError(
            f"invalid Hub spec {spec!r}: unknown scheme {scheme + '://'!r} (use hf://org/repo)"
        )
    revision: str | None = None
    if "@" in body:
        body, revision = body.split("@", 1)
        if not revision:
            raise HubSpecError(f"invalid Hub spec {spec!r}: empty revision after '@'")
        check_revision(revision, f"invalid Hub spec {spec!r}")
    body = body.rstrip("/")
    parts = body.split("/")
    if not body:
        raise HubSpecError(f"invalid Hub spec {spec!r}: no repository (expected hf://org/repo)")
    if len(parts) > 2:
        raise HubSpecError(
            f"invalid Hub spec {spec!r}: expected org/repo, got {len(parts)} path parts "
            "(files inside a repository cannot be named here)"
        )
    for part in parts:
        _check_name(part, spec)
    return HubSpec(repo_id="/".join(parts), revision=revision)


def _local_path(spec: str) -> Path:
    """``spec`` as a path, ``~`` expanded where it can be (``~nosuchuser/x`` stays as typed:
    ``Path.expanduser`` raises RuntimeError for an unknown user)."""
    try:
        return Path(spec).expanduser()
    except RuntimeError:
        return Path(spec)


def is_hub_spec(spec: str | Path) -> bool:
    """Whether ``spec`` should be treated as a Hub model rather than a local path.

    ``hf://...`` always is. A bare ``org/repo`` is when no such local path exists and it parses
    as a repository id. Local paths (existing, absolute, ``./``-relative, ending with ``/``,
    or with a file extension such as ``.safetensors``) are not.

    Args:
        spec: A model spec or a filesystem path.

    Returns:
        True when :func:`parse_spec` should be used.
    """
    if isinstance(spec, Path):
        return False
    if spec.startswith(HF_SCHEME):
        return True
    if not spec or spec.startswith("~") or _local_path(spec).exists():
        return False
    if Path(spec.split("/", 1)[0]).is_dir():  # "models/typo": a local path with a typo
        return False
    if spec.startswith(("/", "./", "../", "~")) or "\\" in spec or spec.endswith(".safetensors"):
        return False
    if spec.endswith("/"):  # "mydir/": a directory, written as one (a repo id never ends so)
        return False
    if spec.endswith(".json"):
        return False
    try:
        parse_spec(spec)
    except HubSpecError:
        return False
    return spec.partition("@")[0].count("/") == 1  # a revision may hold slashes: refs/pr/1
