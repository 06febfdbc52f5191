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
            those modules (mlx-lm's figure also counts the unquantized ones); None unless the
            config gives every module bits and group size its tensors agree with.
        config: Where the config came from; None when there is none.
        problem: What is wrong with the config (unreadable, or contradicted by the tensors);
            None when nothing is.
    """

    modules: int
    specs: dict[str, int] = field(default_factory=dict)
    bits_per_weight: float | None = None
    config: str | None = None
    problem: str | None = None

    def line(self) -> str:
        """One line for a table's footer."""
        text = f"quantized: {self.modules} module{'s' * (self.modules != 1)}"
        if self.specs:
            text += " (" + "; ".join(f"{k}: {n}" for k, n in self.specs.items()) + ")"
        if self.bits_per_weight is not None:
            text += f", {self.bits_per_weight:.2f} bits per quantized weight"
        if self.problem is not None:
            text += f"; {self.problem}"
        elif self.config is None:
            text += "; no quantization config found (mlxload.load_model infers the bits)"
        return text

    def as_dict(self) -> dict:
        return {
            "modules": self.modules,
            "specs": self.specs,
            "bits_per_weight": self.bits_per_weight,
            "config": self.config,
            "problem": self.problem,
        }


def summarize(
    infos: Mapping[str, TensorInfo],
    config: QuantizationConfig | None,
    *,
    config_error: str | None = None,
) -> QuantSummary | None:
    """The quantization of a checkpoint with these tensors, or None when it has none.

    Args:
        infos: Every tensor's info (name -> :class:`~mlxload.header.TensorInfo`).
        config: The checkpoint's quantization config, if it has one.
        config_error: Why the config that exists couldn't be read (it is then None).

    Returns:
        A :class:`QuantSummary`, or None when no module holds packed weights.
    """
    modules = _packed_modules(infos)
    if not modules:
        return None
    specs: Counter[str] = Counter()
    stored = weights = 0
    unquantized: list[str] = []
    contradicted: list[str] = []
    for module, (packed, parts) in sorted(modules.items()):
        spec = config.for_tensor(packed) if config is not None else None
        if spec is None:
            if config is not None:
                unquantized.append(module)
            continue
        specs[_describe(spec)] += 1
        if not _agrees(infos, module, packed, spec):
            contradicted.append(module)
        stored += sum(infos[p].nbytes for p in parts)
        weights += _weights(infos[packed], spec)
    problem = None
    if config_error is not None:
        problem = f"the quantization config can't be read: {config_error}"
    elif contradicted:
        problem = (
            f"the config's bits/group size don't fit the stored tensors of "
            f"{len(contradicted)} module(s), e.g. {contradicted[0]!r} (mlxload.load_model takes "
            "them from the tensors' shapes; fix the config)"
        )
    elif unquantized:
        problem = (
            f"the config says {len(unquantized)} module(s) with packed weights aren't "
            f"quantized, e.g. {unquantized[0]!r}"
        )
    whole = config is not None and problem is None and weights > 0
    return QuantSummary(
        modules=len(modules),
        specs=dict(specs.most_common()),
        bits_per_weight=8 * stored / weights if whole else None,
        config=(config.source or "the config given") if config is not None else None,
        problem=problem,
    )


def _agrees(infos: Mapping[str, TensorInfo], module: str, packed: str, spec: QuantSpec) -> bool:
    """Whether a module's stored shapes fit ``spec`` (MLX's layout: the packed row holds
    ``words * 32 / bits`` inputs, in ``scales``' last-axis count of groups; GPTQ: the packed
    column holds ``rows * 32 / bits`` inputs, in ``scales``' row count of groups, the last one
    may be partial). AWQ packs along the outputs: its groups are checked the GPTQ way."""
    weight, scales = infos[packed].shape, infos.get(f"{module}.scales")
    if scales is None or not weight or not scales.shape:
        return False
    if packed.endswith(".qweight"):  # (in * bits / 32, out) GPTQ, or (in, out * bits / 32) AWQ
        inputs = weight[0] if _awq_like(weight, scales.shape) else weight[0] * 32 / spec.bits
        groups = scales.shape[0]
    else:
        inputs, groups = weight[-1] * 32 / spec.bits, scales.shape[-1]
    if inputs != int(inputs):
        return False
    group = int(inputs) if spec.group_size == -1 else spec.group_size
    return groups == -(-int(inputs) // group)


def _awq_like(weight: tuple[int, ...], scales: tuple[int, ...]) -> bool:
    """AWQ's ``qweight`` packs outputs: its column count is a fraction of ``scales``'."""
    return len(weight) == 2 and len(scales) == 2 and weight[1] < scales[1]


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
