"""Fixtures shared by the tests/test_hub_*.py modules (a stand-in Hub and a small checkpoint)."""

from __future__ import annotations

import _thread
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hub_server import FakeRepo, HubServer, hub_env
from signals import sigint_handled

__all__ = ["checkpoint_files", "hub", "make_repo", "seconds_to_stop_after_ctrl_c", "serve"]

REPO = "acme/tiny-3shard"


def checkpoint_files(tmp: Path, *, shard_elems: tuple[int, ...] = (3000, 2000, 1000)) -> dict:
    """A real 3-shard safetensors checkpoint (``mx.save_safetensors``), index, config, tokenizer.

    Returns:
        repo path -> bytes, plus a ``pytorch_model.bin`` duplicate and a README.
    """
    import mlx.core as mx

    n = len(shard_elems)
    files: dict[str, bytes] = {}
    weight_map: dict[str, str] = {}
    total = 0
    for i, elems in enumerate(shard_elems, start=1):
        name = f"model-{i:05d}-of-{n:05d}.safetensors"
        arrays = {
            f"layers.{i}.weight": mx.arange(elems, dtype=mx.float32).reshape(-1, 10) * i,
            f"layers.{i}.bias": mx.full((10,), float(i), dtype=mx.float16),
        }
        path = tmp / name
        mx.save_safetensors(str(path), arrays)
        files[name] = path.read_bytes()
        for k, a in arrays.items():
            weight_map[k] = name
            total += a.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    files["model.safetensors.index.json"] = json.dumps(index, indent=2).encode()
    files["config.json"] = json.dumps({"model_type": "llama", "hidden_size": 10}).encode()
    tokenizer = {"version": "1.0", "model": {"type": "WordLevel"}}
    files["tokenizer.json"] = json.dumps(tokenizer).encode()
    files["tokenizer_config.json"] = b'{"tokenizer_class": "PreTrainedTokenizerFast"}'
    files["merges.txt"] = b"#version: 0.2\na b\n"
    files["pytorch_model.bin"] = b"\x80\x02pickled-duplicate-weights" * 100
    files["README.md"] = b"# tiny\n"
    return files


def make_repo(tmp: Path, repo_id: str = REPO, **kwargs) -> FakeRepo:
    """A :class:`FakeRepo` holding :func:`checkpoint_files`."""
    return FakeRepo(repo_id, checkpoint_files(tmp), **kwargs)


def serve(monkeypatch, tmp: Path, *repos: FakeRepo) -> tuple[HubServer, dict[str, str]]:
    """Start a server for ``repos`` and point huggingface_hub at it and at ``tmp/hf``."""
    server = HubServer(*repos).start()
    env = hub_env(monkeypatch, server, tmp / "hf")
    return server, env


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """(server, repo, env) for one 3-shard repository; the server stops after the test."""
    import huggingface_hub

    repo = make_repo(tmp_path)
    server, env = serve(monkeypatch, tmp_path, repo)
    yield server, repo, env
    server.stop()
    huggingface_hub.close_session()


def seconds_to_stop_after_ctrl_c(run: Callable[[], object], delay: float = 1.0) -> float:
    """Run ``run()`` in this (the main) thread, press Ctrl-C ``delay`` seconds in, and return
    how long ``run`` took to stop after that; it must stop with ``KeyboardInterrupt``."""
    pressed: list[float] = []

    def press() -> None:
        pressed.append(time.monotonic())
        _thread.interrupt_main()

    timer = threading.Timer(delay, press)
    with sigint_handled():
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                run()
        finally:
            timer.cancel()
    return time.monotonic() - pressed[0]
