"""Find and read the Metal kernel sources shipped with mlxload.

An installed wheel carries them in ``mlxload/kernels/``; a source checkout (or an editable
install) keeps them in the repository's top-level ``kernels/``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from mlxload.errors import MlxloadError

__all__ = ["KernelSourceNotFoundError", "kernel_header", "kernel_source", "kernels_dir"]

_PACKAGE_DIR = Path(__file__).resolve().parent


class KernelSourceNotFoundError(MlxloadError, FileNotFoundError):
    """A kernel source file mlxload needs is missing from the installation."""


def _candidates() -> list[Path]:
    return [_PACKAGE_DIR / "kernels", _PACKAGE_DIR.parent / "kernels"]


@functools.cache
def kernels_dir() -> Path:
    """The directory holding the ``*.metal`` kernel bodies.

    Returns:
        ``mlxload/kernels`` in an installed wheel, else ``<repo>/kernels``.

    Raises:
        KernelSourceNotFoundError: Neither location has any ``.metal`` file.
    """
    for path in _candidates():
        if any(path.glob("*.metal")):
            return path
    looked = ", ".join(str(p) for p in _candidates())
    raise KernelSourceNotFoundError(f"no Metal kernel sources (*.metal) found; looked in {looked}")


@functools.cache
def kernel_source(name: str) -> str:
    """The text of ``<name>.metal`` (read once, then cached).

    Args:
        name: Kernel file stem, e.g. ``"affine_dequantize"``.

    Returns:
        The kernel body source.

    Raises:
        KernelSourceNotFoundError: No such kernel file.
    """
    path = kernels_dir() / f"{name}.metal"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        available = sorted(p.stem for p in kernels_dir().glob("*.metal"))
        raise KernelSourceNotFoundError(
            f"kernel source {path} not found; available kernels: {available}"
        ) from None


@functools.cache
def kernel_header(name: str) -> str:
    """The text of ``<name>.h`` (the ``header=`` of ``metal_kernel``), or ``""`` if none.

    Args:
        name: Kernel file stem, e.g. ``"affine_dequantize"``.
    """
    path = kernels_dir() / f"{name}.h"
    return path.read_text(encoding="utf-8") if path.is_file() else ""
