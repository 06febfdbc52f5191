"""The affine bit widths tests run over: 1-bit only where this MLX's own ops (the oracles
``mx.quantize`` / ``mx.dequantize``, and quantized layers) take it (MLX 0.32.4 on)."""

from __future__ import annotations

import pytest

from mlxload.backend import MLX_FOR_ONE_BIT, mlx_dequantizes_bits

# Written out, not taken from mlxload: a width dropped from the code must fail here.
AFFINE_BITS = (1, 2, 3, 4, 5, 6, 8)
ONE_BIT = pytest.mark.skipif(
    not mlx_dequantizes_bits(1),
    reason=f"1-bit needs MLX {MLX_FOR_ONE_BIT} as the oracle (its CUDA 1-bit ops gave NaN)",
)
BITS = [pytest.param(b, marks=ONE_BIT) if b == 1 else b for b in AFFINE_BITS]
"""For ``@pytest.mark.parametrize("bits", BITS)``."""
ORACLE_BITS = [b for b in AFFINE_BITS if mlx_dequantizes_bits(b)]
"""For hypothesis strategies, which can't carry skip marks."""
