"""Tiny synthetic mlx-lm checkpoints and a greedy decoder for the model, bench, example tests."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from mlxload.synthetic import synthetic_checkpoint

__all__ = ["greedy", "tiny_checkpoint", "tiny_llama_config"]


def tiny_checkpoint(cache: Path, **changes: object) -> Path:
    """A tiny (hidden 64, 2 layers, vocab 256) checkpoint under ``cache``."""
    return synthetic_checkpoint("tiny", cache_dir=cache, **changes)


def tiny_llama_config(**changes: object) -> dict:
    """``config.json`` of a small Llama (hidden 128, 2 layers) for mlx-lm's model classes."""
    config = {
        "model_type": "llama",
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "intermediate_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": 128,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    return {**config, **changes}


def greedy(model, prompt_ids: list[int], n: int = 20) -> list[int]:
    """``n`` greedy token ids (no stopping at EOS), with mlx-lm's KV cache."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    x = mx.array(prompt_ids)[None]
    out = []
    for _ in range(n):
        token = mx.argmax(model(x, cache=cache)[:, -1], axis=-1)
        out.append(token.item())
        x = token[None]
    return out
