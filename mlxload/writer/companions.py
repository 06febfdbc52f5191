"""Copy a model's small companion files (config, tokenizer) next to a split or aligned copy.

Without ``config.json`` and the tokenizer files a directory of shards loads with
``mlxload.load`` but not with ``load_model`` or ``mlx_lm.load``; a user who splits or aligns a
model into a new directory expects to be able to run it from there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path

from mlxload.hub.select import TOKENIZER_PATTERNS, match_patterns
from mlxload.work_names import work_path
from mlxload.writer.sources import same_file

__all__ = ["COMPANION_PATTERNS", "copy_companions"]

COMPANION_PATTERNS = ("*.json", "*.py", *TOKENIZER_PATTERNS)
"""Root files copied along (a safetensors index is written by the writer itself)."""


def copy_companions(root: Path, out_dir: Path, *, replace: bool = False) -> list[Path]:
    """Copy ``root``'s companion files into ``out_dir``.

    Best effort: the shards are already complete, so a file that can't be copied (disk full)
    is skipped with a warning rather than failing the whole write.

    Args:
        root: The source checkpoint's directory.
        out_dir: Where the shards were written.
        replace: Replace files already there (the caller was told to replace the checkpoint
            there, ``--force``); otherwise they are left alone.

    Returns:
        The files written in ``out_dir``.
    """
    if not root.is_dir() or same_file(root, out_dir):
        return []
    copied = []
    for src in sorted(root.iterdir()):
        name = src.name
        if name.endswith(".safetensors.index.json") or name.startswith("."):
            continue
        if not match_patterns(name, COMPANION_PATTERNS) or not src.is_file():
            continue
        dst = out_dir / name
        if dst.exists() and not replace:
            continue
        tmp = work_path(dst, "tmp")
        try:
            shutil.copyfile(src, tmp)  # follows a cache symlink to its blob
            os.replace(tmp, dst)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            warnings.warn(f"{dst}: not copied ({e}); copy it from {src}", stacklevel=3)
            continue
        copied.append(dst)
    return copied
