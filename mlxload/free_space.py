"""Refuse, before writing, an output or download the disk plainly has no room for.

On macOS the free space the file system reports leaves out purgeable space (local
snapshots, iCloud copies), which macOS frees as a disk fills, so a shortfall there is only a
warning: the write itself still ends in a clear error if the disk really fills up.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from mlxload.user_frame import caller_outside_mlxload

__all__ = ["check_free_space", "human_bytes"]


def check_free_space(
    path: Path, need: int, error: Callable[[int], Exception], *, warn: bool = True
) -> None:
    """Raise ``error(free_bytes)`` when ``need`` bytes don't fit on ``path``'s file system.

    Args:
        path: An existing directory on the file system to be written.
        need: Bytes about to be written there.
        error: Builds the exception from the free byte count.
        warn: On macOS, warn about a shortfall (False for a repeated check).

    Raises:
        The exception ``error`` returns (on macOS only a warning, see the module docstring).
    """
    free = shutil.disk_usage(path).free
    if need <= free:
        return
    if not _free_space_leaves_out_purgeable():
        raise error(free)
    if warn:
        warnings.warn(
            f"{path}: {human_bytes(need)} to write but the file system reports "
            f"{human_bytes(free)} free; continuing, as macOS frees purgeable space (snapshots, "
            "iCloud copies) as a disk fills",
            stacklevel=caller_outside_mlxload(),
        )


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"`` (binary units, whole bytes below a KiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _free_space_leaves_out_purgeable() -> bool:
    return sys.platform == "darwin"
