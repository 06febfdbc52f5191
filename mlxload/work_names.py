"""Names of the hidden work files kept beside an output while it is written.

An output ``NAME`` is written as ``.NAME.mlxload-partial``, resumed from
``.NAME.mlxload-journal`` and guarded by ``.NAME.mlxload-lock``. Those names are ~25 bytes
longer than ``NAME``: for a name near the filesystem's 255-byte limit, ``NAME`` is cut and a
hash of the whole name added, so every output still gets its own names, the same on every run
(which resuming relies on).

Example:
    >>> work_path(Path("out/model.safetensors"), "partial")
    PosixPath('out/.model.safetensors.mlxload-partial')
    >>> len(work_path(Path("m" * 240 + ".safetensors"), "journal").name)
    255
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

__all__ = ["NAME_MAX", "output_of", "work_path"]

NAME_MAX = 255
"""Longest file name in bytes that ext4, XFS, APFS and NTFS all take."""

_HASH_CHARS = 16
_PLAIN = re.compile(r"\.(.+)\.mlxload-([a-z-]+)")


def work_path(final: Path, kind: str) -> Path:
    """The ``kind`` work file (``partial``, ``journal``, ``lock``, ``tmp``) of output ``final``.

    Args:
        final: The output's final path.
        kind: Which work file.

    Returns:
        ``.NAME.mlxload-KIND`` beside ``final``; with ``NAME`` cut and hashed when that would
        be longer than :data:`NAME_MAX` bytes.
    """
    suffix = f".mlxload-{kind}"
    name = f".{final.name}{suffix}"
    if len(os.fsencode(name)) <= NAME_MAX:
        return final.with_name(name)
    digest = hashlib.sha256(os.fsencode(final.name)).hexdigest()[:_HASH_CHARS]
    tail = f"~{digest}{suffix}"
    room = NAME_MAX - 1 - len(tail)  # the leading dot
    kept = []
    for ch in final.name:  # cut on a character boundary: APFS takes only valid UTF-8
        room -= len(os.fsencode(ch))
        if room < 0:
            break
        kept.append(ch)
    return final.with_name(f".{''.join(kept)}{tail}")


def output_of(name: str, kinds: tuple[str, ...]) -> str | None:
    """The output name a work file of one of ``kinds`` belongs to, read back from a plain
    (not cut and hashed) work-file name; None for any other file.

    Example:
        >>> output_of(".model.safetensors.mlxload-journal", ("partial", "journal"))
        'model.safetensors'
    """
    m = _PLAIN.fullmatch(name)
    return m.group(1) if m and m.group(2) in kinds else None
