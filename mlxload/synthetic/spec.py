"""What a synthetic checkpoint looks like: sizes, quantization, shards, and its ``config.json``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["DEFAULT_SIZE", "GENERATOR_VERSION", "SIZES", "SyntheticSpec", "spec_for"]

GENERATOR_VERSION = 1
"""Bump when the generator's output changes, so cached checkpoints are rebuilt."""

# name -> (hidden, layers, intermediate, heads, kv_heads, vocab)
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny": (64, 2, 128, 4, 2, 256),  # ~0.1 M parameters: tests
    "small": (256, 4, 768, 8, 4, 4096),  # ~5 M
    "medium": (1024, 16, 2816, 16, 4, 32000),  # ~245 M: bench default
    "large": (2048, 22, 5632, 32, 4, 32000),  # ~1.1 B (TinyLlama's shape)
}
DEFAULT_SIZE = "medium"


@dataclass(frozen=True)
class SyntheticSpec:
    """A Llama-architecture checkpoint in mlx-lm's format, with seeded random weights.

    Attributes:
        name: Label used in the cache directory name.
        bits: Default quantization bits, or ``None`` for an unquantized (float) checkpoint.
        overrides: Per-module quantization overrides written into ``config.json``'s
            ``quantization`` section: ``(module path, bits)``, ``bits=None`` meaning "leave this
            module unquantized".
        shards: Number of ``model-0000i-of-0000N.safetensors`` files.
        dtype: Float dtype of unquantized weights, scales and biases.
    """

    name: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    bits: int | None = 4
    group_size: int = 64
    overrides: tuple[tuple[str, int | None], ...] = field(default=())
    shards: int = 3
    dtype: str = "float16"
    tie_word_embeddings: bool = False
    seed: int = 0

    def key(self) -> str:
        """A short hash of everything that changes the files."""
        text = json.dumps([GENERATOR_VERSION, asdict(self)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def quantization(self) -> dict[str, Any] | None:
        """The ``quantization`` section of ``config.json`` (``None`` when unquantized)."""
        if self.bits is None:
            return None
        section: dict[str, Any] = {"group_size": self.group_size, "bits": self.bits}
        section["mode"] = "affine"
        for path, bits in self.overrides:
            section[path] = False if bits is None else {"group_size": self.group_size, "bits": bits}
        return section

    def model_config(self) -> dict[str, Any]:
        """``config.json`` as mlx-lm writes it for a Llama model."""
        config: dict[str, Any] = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": self.dtype,
        }
        quantization = self.quantization()
        if quantization is not None:
            config["quantization"] = quantization
            config["quantization_config"] = dict(quantization)
        return config


def spec_for(size: str = DEFAULT_SIZE, **changes: Any) -> SyntheticSpec:
    """The spec of a named size (see :data:`SIZES`), with fields changed by keyword.

    Raises:
        ValueError: an unknown size name.
    """
    if size not in SIZES:
        raise ValueError(f"unknown synthetic size {size!r}; choose one of {', '.join(SIZES)}")
    h, layers, inter, heads, kv, vocab = SIZES[size]
    spec = SyntheticSpec(size, h, layers, inter, heads, kv, vocab)
    return replace(spec, **changes)
