"""Versions and backend facts a benchmark (or ``mlxload doctor``) reports."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

__all__ = ["environment", "package_version"]


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Platform, versions, MLX backend, zero-copy support and the default compute dtype."""
    import mlx.core as mx

    from mlxload._version import __version__
    from mlxload.backend import backend, dtype_name, resolve_compute_dtype
    from mlxload.tensor_file import zero_copy_supported

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "mlx": mx.__version__,
        "mlx_lm": package_version("mlx-lm"),
        "mlxload": __version__,
        "backend": backend(),
        "zero_copy": zero_copy_supported(),
        "compute_dtype": dtype_name(resolve_compute_dtype(None)) or "as stored",
    }
