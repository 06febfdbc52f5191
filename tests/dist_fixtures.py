"""Checkpoints and launcher plumbing for the distributed-loading tests.

* :func:`llama_checkpoint`: the synthetic Llama generator's checkpoint (4-bit, group 64,
  hidden 256, 2 layers) for tensor parallel.
* :func:`qwen2_checkpoint`: the same recipe on mlx-lm's ``qwen2`` (Llama-like with q/k/v
  biases), which has ``model.pipeline(group)`` where ``llama`` has none in this mlx-lm; one
  shard per layer so a pipeline stage can skip shards.
* :func:`launch_ring`: ``mlx.launch --backend ring -n 2`` on 127.0.0.1 with a bounded time.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from mlxload.distributed.pipeline import LAYER_PATTERN
from mlxload.synthetic import spec_for, synthetic_checkpoint
from mlxload.synthetic.tokenizer import write_tokenizer

__all__ = ["PROMPT", "RANK_SCRIPT", "launch_ring", "llama_checkpoint", "qwen2_checkpoint"]

PROMPT = [1, 7, 8, 9, 10, 11, 12, 13, 14, 15, 2]
RANK_SCRIPT = Path(__file__).resolve().with_name("distributed_rank.py")

# hidden 256, 2 layers, MLP 1024, 8 heads / 4 KV heads, vocab 256: 4-bit, group 64.
SHAPE = {"num_hidden_layers": 2, "intermediate_size": 1024, "vocab_size": 256}


def llama_checkpoint(cache: Path) -> Path:
    """The synthetic Llama checkpoint (3 shards) under ``cache``."""
    return synthetic_checkpoint("small", cache_dir=cache, shards=3, **SHAPE)


def qwen2_checkpoint(cache: Path, layers: int = 4) -> Path:
    """A seeded 4-bit qwen2 checkpoint: embeddings, one shard per layer, then norm and head.

    Skips the calling test where this mlx-lm's qwen2 has no ``model.pipeline`` (before 0.32,
    the last mlx-lm on Python 3.10), which is what the checkpoint is for.
    """
    from mlx_lm.models import qwen2

    if not hasattr(qwen2.Qwen2Model, "pipeline"):
        pytest.skip("this mlx-lm's qwen2 has no model.pipeline(group) (mlx-lm 0.32 has)")
    target = cache / f"qwen2-{layers}"
    if target.is_dir():
        return target
    spec = replace(spec_for("small", **SHAPE), num_hidden_layers=layers, seed=1)
    config = spec.model_config() | {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}
    mx.random.seed(spec.seed)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    params = tree_flatten(model.parameters())
    keys = mx.random.split(mx.random.key(spec.seed), len(params))
    new = []
    for (name, p), key in zip(params, keys, strict=True):
        if name.endswith("norm.weight"):
            value = mx.ones(p.shape)
        else:
            std = 0.02 if "embed_tokens" in name or p.ndim == 1 else 1 / math.sqrt(p.shape[-1])
            value = mx.random.normal(p.shape, key=key) * std
        new.append((name, value.astype(mx.float16)))
    model.update(tree_unflatten(new))
    nn.quantize(model, group_size=64, bits=4)
    tmp = cache / f".qwen2-{layers}.{os.getpid()}"
    tmp.mkdir(parents=True)
    _write_by_layer(dict(tree_flatten(model.parameters())), tmp, layers)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(tmp, spec.vocab_size)
    os.rename(tmp, target)
    return target


def _write_by_layer(weights: dict[str, mx.array], directory: Path, layers: int) -> None:
    # Shard 1: embeddings; shard 2 + i: layer i; last: final norm and head.
    count = layers + 2
    groups: dict[int, dict[str, mx.array]] = {}
    for name, value in weights.items():
        m = LAYER_PATTERN.search(name)
        index = 0 if "embed_tokens" in name else count - 1 if m is None else int(m.group(1)) + 1
        groups.setdefault(index, {})[name] = value
    weight_map = {}
    for index, arrays in sorted(groups.items()):
        file = f"model-{index + 1:05d}-of-{count:05d}.safetensors"
        mx.save_safetensors(str(directory / file), arrays, metadata={"format": "mlx"})
        weight_map.update(dict.fromkeys(arrays, file))
    total = sum(v.nbytes for v in weights.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _free_port_pair() -> int:
    # The ring backend listens on port p for rank 0 and p + 1 for rank 1.
    for _ in range(20):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise OSError("no two consecutive free ports on 127.0.0.1")


def launch_ring(script: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``script args`` as 2 ranks of a ring-backend job on 127.0.0.1.

    Raises:
        FileNotFoundError: ``mlx.launch`` isn't installed next to this Python.
        subprocess.TimeoutExpired: the job ran past ``timeout`` seconds.
    """
    launcher = Path(sys.executable).with_name("mlx.launch")
    if not launcher.is_file():
        raise FileNotFoundError(f"{launcher}: mlx.launch is not installed")
    command = [
        str(launcher),
        "--backend",
        "ring",
        "-n",
        "2",
        "--starting-port",
        str(_free_port_pair()),
        "--python",
        sys.executable,
        str(script),
        *args,
    ]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    # Own process group: on a timeout the ranks mlx.launch started go too, not just mlx.launch.
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=script.parent,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
