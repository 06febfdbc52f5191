"""The checks behind ``mlxload doctor``: each tries one thing on this machine and says how it went.

A check returns a :class:`Check` with status ``ok``, ``info`` (a fact, nothing to fix),
``warn`` (works, but worse than it could) or ``fail`` (broken: ``fix`` says what to do).
"""

from __future__ import annotations

import importlib
import mmap
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

__all__ = ["CHECKS", "Check", "run_checks"]

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def check_platform() -> Check:
    return Check("platform", INFO, f"{platform.platform()} ({platform.machine()})")


def check_python() -> Check:
    return Check("python", OK, sys.version.split()[0])


def check_mlx() -> Check:
    from mlxload.backend import backend

    name = backend()
    detail = f"MLX {mx.__version__}, backend {name} (default device {mx.default_device()})"
    if name == "cpu" and sys.platform == "darwin" and platform.machine() == "arm64":
        return Check(
            "mlx",
            WARN,
            detail + "; Metal is not in use on this Apple-silicon Mac",
            "install the Metal build: pip install -U mlx (not mlx[cpu])",
        )
    return Check("mlx", OK, detail)


def _mapped_import(path: Path, data: bytes) -> tuple[bool, str]:
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    window = np.frombuffer(mapping, dtype=np.uint8, count=len(data))
    try:
        arr = mx.from_dlpack(window, copy=False)
    except (ValueError, RuntimeError, TypeError) as e:
        return False, str(e)
    same = bytes(np.array(arr, copy=True)) == data
    # The mapping is unmapped when the last view of it (arr, window) is collected.
    return same, "mapped bytes read back " + ("intact" if same else "CORRUPTED")


def check_zero_copy() -> Check:
    """Map a small temp file and import it into MLX with ``copy=False``."""
    from mlxload.tensor_file import zero_copy_supported

    data = bytes(range(256)) * 64
    with tempfile.TemporaryDirectory(prefix="mlxload-doctor-") as tmp:
        path = Path(tmp) / "probe.bin"
        path.write_bytes(data)
        works, detail = _mapped_import(path, data)
    expected = zero_copy_supported()
    if works:
        return Check("zero-copy", OK, "mmap import without a copy works: " + detail)
    if "CORRUPTED" in detail:
        return Check(
            "zero-copy",
            FAIL,
            detail,
            "report this with `mlxload doctor --json` output; meanwhile load with zero_copy=False",
        )
    if expected:
        return Check(
            "zero-copy",
            FAIL,
            f"Metal is available but the mapped import failed: {detail}",
            "update MLX (pip install -U mlx); loads fall back to one copy until then",
        )
    return Check(
        "zero-copy",
        INFO,
        f"not on this backend (MLX's probe answer: {detail}); tensors are copied once instead",
    )


def check_metal_kernels() -> Check:
    """Probe and run mlxload's dequantize kernel against ``mx.dequantize`` on this GPU."""
    if not mx.metal.is_available():
        return Check("metal kernels", INFO, "skipped: no Metal")
    from mlxload import metal_dequant
    from mlxload.backend import dtype_name, mlx_affine_bits
    from mlxload.dequant import PATH_METAL, dequantize, last_path

    modes = {}
    for dtype in (mx.float16, mx.bfloat16, mx.float32):
        mode = metal_dequant.rounding(dtype, dtype, dtype)
        if mode is None:
            why = metal_dequant.rounding_failures().get((dtype,) * 3, "unknown")
            return Check(
                "metal kernels",
                WARN,
                f"{dtype_name(dtype)}: the kernel can't match mx.dequantize here ({why}); "
                "dequantize uses mx.dequantize instead, results stay exact",
                "report this with `mlxload doctor --json` output",
            )
        modes[dtype_name(dtype)] = mode
    bad = []
    w = mx.random.normal((16, 256), key=mx.random.key(0)).astype(mx.float16)
    checked = mlx_affine_bits()
    for bits in checked:
        q, s, b = mx.quantize(w, group_size=64, bits=bits)
        ours = dequantize(q, s, b, 64, bits)
        if last_path() != PATH_METAL or not mx.array_equal(
            ours, mx.dequantize(q, s, b, group_size=64, bits=bits)
        ):
            bad.append(bits)
    if bad:
        return Check(
            "metal kernels",
            FAIL,
            f"differ from mx.dequantize for bits {bad}",
            "report this with `mlxload doctor --json` output",
        )
    rounding = ", ".join(f"{k} {v}" for k, v in modes.items())
    return Check(
        "metal kernels",
        OK,
        f"compiled; match mx.dequantize for bits {checked[0]}-8 (rounding: {rounding})",
    )


def check_compute_dtype() -> Check:
    from mlxload.backend import dtype_name, resolve_compute_dtype

    chosen = resolve_compute_dtype(None)
    if chosen is None:
        text = "each tensor as stored, as mlx-lm keeps them (half precision is native on GPUs)"
    else:
        why = "float16 quantized matmuls are emulated and ~30x slower on MLX's CPU backend"
        text = f"{dtype_name(chosen)} for float16/bfloat16 checkpoints ({why})"
    return Check("compute dtype", INFO, text)


def check_read() -> Check:
    """Write a small safetensors file and read it back through mlxload."""
    from mlxload.reader import load_file

    want = {"a": mx.arange(10, dtype=mx.float32), "b": mx.ones((3, 5), dtype=mx.float16)}
    with tempfile.TemporaryDirectory(prefix="mlxload-doctor-") as tmp:
        path = os.path.join(tmp, "probe.safetensors")
        mx.save_safetensors(path, want)
        got = load_file(path)
    if set(got) != set(want) or not all(mx.array_equal(got[k], want[k]) for k in want):
        return Check(
            "read",
            FAIL,
            "a file mlxload just wrote read back wrong",
            "reinstall mlxload and MLX; report it if it persists",
        )
    return Check("read", OK, "safetensors round trip through mlxload.load_file")


def check_mlx_lm() -> Check:
    from mlxload.bench.environment import package_version

    version = package_version("mlx-lm")
    if version is None:
        return Check(
            "mlx-lm",
            WARN,
            "not installed: load_model, bench and the examples need it",
            "pip install 'mlxload[lm]'",
        )
    try:  # installed is not enough: load_model imports it (a broken dependency fails here)
        importlib.import_module("mlx_lm.utils")
    except Exception as e:
        return Check(
            "mlx-lm",
            FAIL,
            f"mlx-lm {version} is installed but does not import: {type(e).__name__}: {e}",
            "reinstall it: pip install --force-reinstall 'mlxload[lm]'",
        )
    release = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if release < (0, 32):  # the last mlx-lm for Python 3.10 is 0.31
        return Check(
            "mlx-lm",
            OK,
            f"mlx-lm {version}: loads models; mlx-lm 0.32 (Python >= 3.11) adds pipeline "
            "parallelism for most architectures and nvfp4 global scales",
        )
    return Check("mlx-lm", OK, f"mlx-lm {version}")


def check_hub() -> Check:
    try:
        from mlxload.hub.cache import default_cache_dir
        from mlxload.hub.offline import offline_mode
    except ImportError as e:  # huggingface_hub missing
        return Check(
            "hub", FAIL, f"huggingface_hub unavailable: {e}", "pip install huggingface_hub"
        )
    cache = default_cache_dir()
    offline = offline_mode()
    detail = f"cache {cache}; offline {'on (HF_HUB_OFFLINE)' if offline else 'off'}"
    probe = cache if cache.exists() else next((p for p in cache.parents if p.exists()), cache)
    if probe.exists() and not probe.is_dir():  # W_OK alone passes a writable regular file
        return Check(
            "hub",
            FAIL,
            detail + f"; {probe} is a file, not a directory",
            f"set HF_HUB_CACHE (or HF_HOME) to a directory, or move the file {probe} away",
        )
    if not offline and not os.access(probe, os.W_OK):
        return Check(
            "hub",
            FAIL,
            detail + f"; {probe} is not writable",
            "set HF_HOME (or HF_HUB_CACHE) to a writable directory",
        )
    return _unfinished_downloads_check(cache, detail)


def _unfinished_downloads_check(cache: Path, detail: str) -> Check:
    from mlxload.free_space import human_bytes
    from mlxload.hub.cache import PARTIAL_SUFFIX, unfinished_downloads

    unfinished = unfinished_downloads(cache) if cache.is_dir() else {}
    if not unfinished:
        return Check("hub", OK, detail)
    held = ", ".join(f"{repo} ({human_bytes(size)})" for repo, size in unfinished.items())
    first = next(iter(unfinished))
    folder = "--".join(["models", *first.split("/")])
    return Check(
        "hub",
        WARN,
        detail + f"; unfinished downloads hold space: {held}",
        f"run `mlxload download REPO` again to finish one (e.g. `mlxload download {first}`, "
        f"with the same revision), or delete its partial files to free the space "
        f"(e.g. {cache / folder / 'blobs'}/*{PARTIAL_SUFFIX})",
    )


CHECKS: tuple[Callable[[], Check], ...] = (
    check_platform,
    check_python,
    check_mlx,
    check_zero_copy,
    check_metal_kernels,
    check_compute_dtype,
    check_read,
    check_mlx_lm,
    check_hub,
)


def run_checks(checks: tuple[Callable[[], Check], ...] | None = None) -> list[Check]:
    """Run ``checks`` (default :data:`CHECKS`); one that raises becomes a ``fail`` naming it."""
    out = []
    for check in CHECKS if checks is None else checks:
        try:
            out.append(check())
        except Exception as e:
            name = check.__name__.removeprefix("check_").replace("_", " ")
            out.append(Check(name, FAIL, f"{type(e).__name__}: {e}", "report this as a bug"))
    return out
