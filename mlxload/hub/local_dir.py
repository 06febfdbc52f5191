"""Copy a cached snapshot into a plain directory (``mlxload download --local-dir``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from mlxload.hub.cache import files_in
from mlxload.hub.listing import RemoteFile
from mlxload.hub.select import default_selection, select_files
from mlxload.work_names import work_path

__all__ = ["export_snapshot"]


def export_snapshot(
    snapshot: Path, dest: Path, allow_patterns: Sequence[str] | None = None
) -> Path:
    """Copy the files a download selects from ``snapshot`` into ``dest`` as real files.

    The snapshot may hold more than this download asked for (an earlier, wider download of
    the same commit); only the same selection as :func:`mlxload.hub.download` with these
    ``allow_patterns`` is copied, so ``*.bin`` duplicates never come along uninvited. A file
    already in ``dest`` with the same bytes is left alone; every copy goes to a temporary name
    first and is renamed into place.

    Args:
        snapshot: A snapshot directory from :func:`mlxload.hub.download`.
        dest: The directory to fill (created if needed).
        allow_patterns: As given to the download (None: the default selection).

    Returns:
        ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for rel in _selected(snapshot, allow_patterns):
        src = snapshot / rel
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        same_size = out.is_file() and out.stat().st_size == src.stat().st_size
        if same_size and not out.is_symlink() and _same_bytes(out, src):
            continue
        tmp = work_path(out, "tmp")
        shutil.copyfile(src, tmp)  # follows the symlink; copy_file_range/sendfile on Linux
        os.replace(tmp, out)
    return dest


def _selected(snapshot: Path, allow_patterns: Sequence[str] | None) -> list[str]:
    files = [RemoteFile(path, 0, "0" * 40) for path in files_in(snapshot)]  # only paths matter here
    if allow_patterns is not None:
        return [f.path for f in select_files(files, allow_patterns=allow_patterns)]
    return [f.path for f in default_selection(files, snapshot)]


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 22) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True
