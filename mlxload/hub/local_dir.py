"""Copy a cached snapshot into a plain directory (``mlxload download --local-dir``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["export_snapshot"]


def export_snapshot(snapshot: Path, dest: Path) -> Path:
    """Copy every file of ``snapshot`` into ``dest`` as real files (not cache symlinks).

    A file already in ``dest`` with the same bytes is left alone; every copy goes to a
    temporary name first and is renamed into place.

    Args:
        snapshot: A snapshot directory from :func:`mlxload.hub.download`.
        dest: The directory to fill (created if needed).

    Returns:
        ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(snapshot.rglob("*")):
        if not src.is_file():
            continue
        rel = src.relative_to(snapshot)
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        same_size = out.is_file() and out.stat().st_size == src.stat().st_size
        if same_size and not out.is_symlink() and _same_bytes(out, src):
            continue
        tmp = out.with_name(f".{out.name}.mlxload-tmp")
        shutil.copyfile(src, tmp)  # follows the symlink; copy_file_range/sendfile on Linux
        os.replace(tmp, out)
    return dest


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 22) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True
