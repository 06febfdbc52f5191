"""What a checkpoint's quantization looks like, from its headers and config alone.

``mlxload inspect`` shows it: which modules are quantized, with which bits, group size and
mode (as the config gives them), and the bits stored per weight, the figure mlx-lm prints when
it quantizes. No tensor data is read.

Example:
    >>> from mlxload.header import TensorInfo
    >>> infos = {
    ...     "m.weight": TensorInfo("m.weight", "U32", (8, 16), 0, 512, 0),
    ...     "m.scales": TensorInfo("m.scales", "F16", (8, 2), 512, 544, 0),
    ...     "m.biases": TensorInfo("m.biases", "F16", (8, 2), 544, 576, 0),
    ... }
    >>> from mlxload.quant_config import QuantizationConfig
    >>> summary = summarize(infos, QuantizationConfig.from_json('{"bits": 4}'))
    >>> summary.line()
    'quantized: 1 module (4-bit, group 64, affine: 1), 4.50 bits per quantized weight'
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlxload.header import TensorInfo
from mlxload.quant_config import QuantizationConfig, QuantSpec

__all__ = ["QuantSummary", "summarize"]

_PACKED = {"U32", "I32"}


@dataclass
class QuantSummary:
    """The quantized modules of a checkpoint.

    Attributes:
        modules: How many modules hold packed weights.
        specs: ``"4-bit, group 64, affine"`` -> how many modules the config gives it (empty
            without a config).
        bits_per_weight: Stored bits (packed weights, scales, biases, zeros) per weight of
            those modules (mlx-lm's figure also counts the unquantized ones); None when the
            config doesn't say every module's bits.
        config: Where the config came from; None when there is none.
    """

    modules: int
    specs: dict[str, int] = field(default_factory=dict)
    bits_per_weight: float | None = None
    config: str | None = None

    def line(self) -> str:
        """One line for a table's footer."""
        text = f"quantized: {self.modules} module{'s' * (self.modules != 1)}"
        if self.specs:
            text += " (" + "; ".join(f"{k}: {n}" for k, n in self.specs.items()) + ")"
        if self.bits_per_weight is not None:
            text += f", {self.bits_per_weight:.2f} bits per quantized weight"
        if self.config is None:
            text += "; no quantization config found (mlxload.load_model infers the bits)"
        return text

    def as_dict(self) -> dict:
        return {
            "modules": self.modules,
            "specs": self.specs,
            "bits_per_weight": self.bits_per_weight,
            "config": self.config,
        }


def summarize(
    infos: Mapping[str, TensorInfo], config: QuantizationConfig | None
) -> QuantSummary | None:
    """The quantization of a checkpoint with these tensors, or None when it has none.

    Args:
        infos: Every tensor's info (name -> :class:`~mlxload.header.TensorInfo`).
        config: The checkpoint's quantization config, if it has one.

    Returns:
        A :class:`QuantSummary`, or None when no module holds packed weights.
    """
    modules = _packed_modules(infos)
    if not modules:
        return None
    specs: Counter[str] = Counter()
    stored = weights = 0
    known = config is not None
    for packed, parts in sorted(modules.values()):
        spec = config.for_tensor(packed) if config is not None else None
        if spec is None:
            known = False
            continue
        specs[_describe(spec)] += 1
        stored += sum(infos[p].nbytes for p in parts)
        weights += _weights(infos[packed], spec)
    return QuantSummary(
        modules=len(modules),
        specs=dict(specs.most_common()),
        bits_per_weight=8 * stored / weights if known and weights else None,
        config=(config.source or "the config given") if config is not None else None,
    )


def _packed_modules(infos: Mapping[str, TensorInfo]) -> dict[str, tuple[str, list[str]]]:
    """Module -> (its packed weight, every tensor of its quantization)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for name in infos:
        module, _, suffix = name.rpartition(".")
        if suffix == "scales" and f"{module}.weight" in infos:
            packed = f"{module}.weight"
            if infos[packed].dtype not in _PACKED:
                continue
        elif suffix == "qweight":
            packed = name
        else:
            continue
        parts = [
            f"{module}.{s}"
            for s in ("weight", "qweight", "scales", "biases", "qzeros", "g_idx")
            if f"{module}.{s}" in infos
        ]
        out[module] = (packed, parts)
    return out


def _describe(spec: QuantSpec) -> str:
    return f"{spec.bits}-bit, group {spec.group_size}, {spec.mode}"


def _weights(packed: TensorInfo, spec: QuantSpec) -> int:
    """How many weights a packed tensor holds: 32 / bits per 32-bit word, whichever axis the
    format packs along (MLX and GPTQ the inputs, AWQ the outputs)."""
    return math.prod(packed.shape) * 32 // spec.bits
