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

__all__ = ["check_free_space"]


def check_free_space(path: Path, need: int, error: Callable[[int], Exception]) -> None:
    """Raise ``error(free_bytes)`` when ``need`` bytes don't fit on ``path``'s file system.

    Args:
        path: An existing directory on the file system to be written.
        need: Bytes about to be written there.
        error: Builds the exception from the free byte count.

    Raises:
        The exception ``error`` returns (only a warning on macOS, see the module docstring).
    """
    free = shutil.disk_usage(path).free
    if need <= free:
        return
    exc = error(free)
    if _free_space_leaves_out_purgeable():
        warnings.warn(
            f"{exc}; going on anyway: macOS doesn't count purgeable space (snapshots, iCloud "
            "copies) as free and releases it as the disk fills",
            stacklevel=3,
        )
        return
    raise exc


def _free_space_leaves_out_purgeable() -> bool:
    return sys.platform == "darwin"
