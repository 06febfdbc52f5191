"""Where a warning should point: at the user's code that called into mlxload."""

from __future__ import annotations

import sys

__all__ = ["caller_outside_mlxload"]


def caller_outside_mlxload() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` made by the calling function, pointing the
    warning at the first caller outside this package (not at mlxload's own lines).

    Example:
        >>> import warnings
        >>> def check():
        ...     warnings.warn("careful", stacklevel=caller_outside_mlxload())
    """
    frame, level = sys._getframe(2), 2  # 0: this function, 1: the one warning
    while frame is not None and frame.f_globals.get("__name__", "").startswith("mlxload"):
        frame, level = frame.f_back, level + 1
    return level
