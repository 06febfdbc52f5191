"""Synthetic mlx-lm checkpoints: realistic files with seeded random weights, made offline.

:func:`synthetic_checkpoint` builds a Llama-architecture model (quantized by default), writes it
as several shards with an index, a ``config.json`` with a ``quantization`` section and a
word-level tokenizer, once, into a cache directory; later calls return the cached copy. The
directory appears atomically (written under a temporary name, then renamed), so an interrupted
generation never leaves a half checkpoint behind.

Example:
    >>> path = synthetic_checkpoint("tiny")        # doctest: +SKIP
    >>> sorted(p.name for p in path.iterdir())[:2]  # doctest: +SKIP
    ['config.json', 'model-00001-of-00003.safetensors']
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from mlxload.synthetic.spec import DEFAULT_SIZE, SIZES, SyntheticSpec, spec_for

__all__ = [
    "DEFAULT_SIZE",
    "SIZES",
    "SyntheticSpec",
    "cache_root",
    "spec_for",
    "synthetic_checkpoint",
    "write_checkpoint",
]


def cache_root() -> Path:
    """``$MLXLOAD_CACHE/synthetic``, else ``~/.cache/mlxload/synthetic``."""
    base = os.environ.get("MLXLOAD_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "mlxload"
    return root / "synthetic"


def write_checkpoint(spec: SyntheticSpec, directory: str | os.PathLike) -> Path:
    """Write the checkpoint ``spec`` describes into ``directory`` (created; must not exist).

    Returns:
        ``directory`` as a Path.

    Raises:
        FileExistsError: ``directory`` already exists.
    """
    from mlxload.synthetic.tokenizer import write_tokenizer
    from mlxload.synthetic.weights import build_weights, write_shards

    directory = Path(directory)
    directory.mkdir(parents=True)
    write_shards(build_weights(spec), directory, spec.shards)
    (directory / "config.json").write_text(json.dumps(spec.model_config(), indent=2))
    write_tokenizer(directory, spec.vocab_size)
    (directory / "synthetic.json").write_text(json.dumps(asdict(spec), indent=2))
    return directory


def synthetic_checkpoint(
    size: str | SyntheticSpec = DEFAULT_SIZE,
    *,
    cache_dir: str | os.PathLike | None = None,
    **changes: object,
) -> Path:
    """The directory of a synthetic checkpoint, generated on first use.

    Args:
        size: A size name from :data:`SIZES` (``tiny``, ``small``, ``medium``, ``large``) or a
            full :class:`SyntheticSpec`.
        cache_dir: Where checkpoints are kept (default :func:`cache_root`).
        **changes: Spec fields to change, e.g. ``bits=8`` or ``overrides=(("lm_head", 8),)``.

    Returns:
        ``<cache_dir>/<size>-<hash of the spec>``.

    Raises:
        ValueError: an unknown size name or spec field value.
    """
    spec = size if isinstance(size, SyntheticSpec) else spec_for(size, **changes)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / f"{spec.name}-{spec.key()}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=root))
    try:
        write_checkpoint(spec, tmp / "ckpt")
        try:
            os.rename(tmp / "ckpt", final)
        except OSError:
            if not final.is_dir():  # someone else finished first: theirs is identical
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
