"""The synthetic checkpoint generator: mlx-lm layout, determinism, cache reuse, atomicity."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from mlxload.synthetic import spec_for, synthetic_checkpoint, write_checkpoint


def test_layout_is_mlx_lm_sharded(tmp_path):
    spec = spec_for("tiny", overrides=(("lm_head", 8),))
    path = write_checkpoint(spec, tmp_path / "ckpt")
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    stored = {}
    for name in shards:
        stored.update(mx.load(str(path / name)))
    assert set(stored) == set(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in stored.values())
    assert stored["model.layers.0.mlp.up_proj.weight"].dtype == mx.uint32
    assert stored["lm_head.weight"].shape == (256, 64 * 8 // 32)  # the 8-bit override
    config = json.loads((path / "config.json").read_text())
    assert config["quantization"] == {
        "group_size": 64,
        "bits": 4,
        "mode": "affine",
        "lm_head": {"group_size": 64, "bits": 8},
    }
    tok = json.loads((path / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast" and "chat_template" in tok


def test_same_spec_same_bytes(tmp_path):
    spec = spec_for("tiny")
    a = write_checkpoint(spec, tmp_path / "a")
    b = write_checkpoint(spec, tmp_path / "b")
    for f in sorted(a.glob("*.safetensors")):
        assert f.read_bytes() == (b / f.name).read_bytes()
    other = write_checkpoint(spec_for("tiny", seed=1), tmp_path / "c")
    name = "model-00001-of-00003.safetensors"
    assert (a / name).read_bytes() != (other / name).read_bytes()


def test_cache_reuses_and_leaves_no_partial(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXLOAD_CACHE", str(tmp_path))
    first = synthetic_checkpoint("tiny")
    assert first.parent == tmp_path / "synthetic" and first.name.startswith("tiny-")
    stamp = (first / "config.json").stat().st_mtime_ns
    assert synthetic_checkpoint("tiny") == first
    assert (first / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    import mlxload.synthetic.tokenizer as tokenizer

    def boom(directory, vocab_size):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer, "write_tokenizer", boom)
    with pytest.raises(KeyboardInterrupt):
        synthetic_checkpoint("tiny", cache_dir=tmp_path, seed=7)
    assert list(tmp_path.iterdir()) == []


def test_bad_size_and_vocab(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic size 'huge'; choose one of tiny"):
        spec_for("huge")
    with pytest.raises(ValueError, match="vocab_size 10 is smaller than the built-in vocabulary"):
        write_checkpoint(spec_for("tiny", vocab_size=10, bits=None), tmp_path / "x")
