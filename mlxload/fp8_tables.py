"""Exact decoding tables for the 8-bit float formats MLX can't hold.

Every 8-bit code of such a format is a value float32 holds exactly, so a 256-entry table
decodes a tensor exactly: ``table[code]``. The tables are built from each format's definition
(exponent and mantissa widths, bias, and how it spells NaN and infinity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = ["FP8_FORMATS", "Fp8Format", "fp8_table"]


@dataclass(frozen=True)
class Fp8Format:
    """One 8-bit float format.

    Attributes:
        exponent_bits, mantissa_bits: Field widths (with a sign bit when ``signed``).
        bias: Exponent bias.
        specials: How non-finite values are spelled: ``"ieee"`` (an all-ones exponent is
            infinity or NaN), ``"fn"`` (only all-ones exponent and mantissa is NaN; no
            infinity), ``"fnuz"`` (only the negative-zero code ``0x80`` is NaN; no infinity,
            one zero), ``"e8m0"`` (unsigned powers of two; ``0xFF`` is NaN).
    """

    exponent_bits: int
    mantissa_bits: int
    bias: int
    specials: str
    signed: bool = True


FP8_FORMATS: dict[str, Fp8Format] = {
    "F8_E4M3": Fp8Format(4, 3, 7, "fn"),
    "F8_E5M2": Fp8Format(5, 2, 15, "ieee"),
    "F8_E4M3FNUZ": Fp8Format(4, 3, 8, "fnuz"),
    "F8_E5M2FNUZ": Fp8Format(5, 2, 16, "fnuz"),
    "F8_E8M0": Fp8Format(8, 0, 127, "e8m0", signed=False),
}


def _decode(code: int, f: Fp8Format) -> float:
    if f.specials == "e8m0":
        return math.nan if code == 0xFF else math.ldexp(1.0, code - f.bias)
    sign = -1.0 if code & 0x80 else 1.0
    nan = math.copysign(math.nan, sign)  # signed NaN, as ml_dtypes decodes (kept in float16
    # and float32; MLX's astype to bfloat16 makes every NaN positive)
    exponent = (code >> f.mantissa_bits) & ((1 << f.exponent_bits) - 1)
    mantissa = code & ((1 << f.mantissa_bits) - 1)
    all_ones = (1 << f.exponent_bits) - 1
    if f.specials == "fnuz" and code == 0x80:
        return nan
    if f.specials == "ieee" and exponent == all_ones:
        return nan if mantissa else sign * math.inf
    if f.specials == "fn" and exponent == all_ones and mantissa == (1 << f.mantissa_bits) - 1:
        return nan
    if exponent == 0:  # subnormal
        return sign * math.ldexp(mantissa, 1 - f.bias - f.mantissa_bits)
    return sign * math.ldexp((1 << f.mantissa_bits) + mantissa, exponent - f.bias - f.mantissa_bits)


@cache
def fp8_table(name: str) -> np.ndarray:
    """The float32 value of each of the 256 codes of the 8-bit format ``name``.

    Raises:
        KeyError: ``name`` is not an 8-bit float format (see :data:`FP8_FORMATS`).

    Example:
        >>> float(fp8_table("F8_E4M3FNUZ")[0x7F])
        240.0
    """
    fmt = FP8_FORMATS[name]
    table = np.array([_decode(code, fmt) for code in range(256)], dtype=np.float32)
    table.flags.writeable = False
    return table
