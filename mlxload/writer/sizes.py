"""Parse human byte sizes: ``"5GB"``, ``"500MB"``, ``"1.5GiB"``, ``"1024"``."""

from __future__ import annotations

import re
from decimal import Decimal

from mlxload.writer.errors import InvalidSizeError

__all__ = ["parse_size"]

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$")


def parse_size(size: int | str) -> int:
    """Bytes in a size given as an int or a string with a decimal (GB) or binary (GiB) unit.

    Args:
        size: ``5_000_000_000``, ``"5GB"`` (10**9), ``"1.5GiB"`` (2**30), ``"500MB"``.

    Returns:
        The size in bytes (rounded down: ``"0.1KiB"`` is 102), at least 1.

    Raises:
        InvalidSizeError: unparseable, unknown unit, fractional bytes, or not positive.
    """
    if isinstance(size, bool):
        raise InvalidSizeError(f"size must be a number of bytes or a string like '5GB', got {size}")
    if isinstance(size, int):
        value = size
    else:
        if len(str(size)) > 64:
            raise InvalidSizeError(f"cannot parse size {str(size)[:20]}...: too long")
        match = _PATTERN.match(str(size))
        unit = match and _UNITS.get(match.group(2).upper())
        if not match or unit is None:
            raise InvalidSizeError(
                f"cannot parse size {size!r}; use bytes or a unit such as 500MB, 5GB, 1.5GiB"
            )
        exact = Decimal(match.group(1)) * unit
        if unit == 1 and exact != int(exact):  # "1.5": bytes don't come in halves
            raise InvalidSizeError(
                f"size {size!r} is not a whole number of bytes; give a unit (1.5GB) or an integer"
            )
        value = int(exact)
    if value < 1:
        raise InvalidSizeError(f"size must be at least 1 byte, got {size!r}")
    if value > 2**63 - 1:
        raise InvalidSizeError(f"size must be under 2**63 bytes, got {str(size)[:20]}...")
    return value
