"""Run Metal kernel bodies on the CPU: compile them as C++ behind ``shim.h`` and loop the grid.

The generated C++ reproduces the signature ``mx.fast.metal_kernel`` writes (see
``mlx/backend/common/metal_kernel.cpp``): inputs with their MLX type names, ``*_shape`` /
``*_strides`` / ``*_ndim`` only when the body mentions them, outputs, the thread attributes the
body mentions, and the template parameters. Each distinct translation unit is compiled once
and kept on disk under a hash of its text, so later runs skip the compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ATTRIBUTES",
    "KernelSpec",
    "Launcher",
    "build",
    "cache_dir",
    "have_compiler",
    "launch",
]

SHIM = Path(__file__).with_name("shim.h")
CXX = os.environ.get("CXX", "g++")
FLAGS = ["-O2", "-std=c++17", "-ffp-contract=off", "-fPIC", "-shared", "-w"]

# MLX passes inputs with fewer elements than this in the constant address space.
MAX_CONSTANT_ARRAY_SIZE = 8

# Thread attributes the emulator can supply, with their MSL types.
ATTRIBUTES: dict[str, str] = {
    "thread_position_in_grid": "uint3",
    "threads_per_grid": "uint3",
    "grid_size": "uint3",
    "thread_position_in_threadgroup": "uint3",
    "threadgroup_position_in_grid": "uint3",
    "threads_per_threadgroup": "uint3",
    "thread_index_in_threadgroup": "uint",
}

# Every attribute real MLX recognises (substring match on the body); ones missing from
# ATTRIBUTES make the emulator refuse rather than silently miscompile.
MLX_ATTRIBUTES = (
    "dispatch_quadgroups_per_threadgroup",
    "dispatch_simdgroups_per_threadgroup",
    "dispatch_threads_per_threadgroup",
    "grid_origin",
    "grid_size",
    "quadgroup_index_in_threadgroup",
    "quadgroups_per_threadgroup",
    "simdgroup_index_in_threadgroup",
    "simdgroups_per_threadgroup",
    "thread_execution_width",
    "thread_index_in_quadgroup",
    "thread_index_in_simdgroup",
    "thread_index_in_threadgroup",
    "thread_position_in_grid",
    "thread_position_in_threadgroup",
    "threadgroup_position_in_grid",
    "threadgroups_per_grid",
    "threads_per_grid",
    "threads_per_simdgroup",
    "threads_per_threadgroup",
)

_ATTR_VALUE = {
    "thread_position_in_grid": "uint3{x, y, z}",
    "threads_per_grid": "uint3{grid[0], grid[1], grid[2]}",
    "grid_size": "uint3{grid[0], grid[1], grid[2]}",
    "thread_position_in_threadgroup": "uint3{x % tg[0], y % tg[1], z % tg[2]}",
    "threadgroup_position_in_grid": "uint3{x / tg[0], y / tg[1], z / tg[2]}",
    "threads_per_threadgroup": "uint3{tg[0], tg[1], tg[2]}",
    "thread_index_in_threadgroup": (
        "(z % tg[2]) * tg[0] * tg[1] + (y % tg[1]) * tg[0] + (x % tg[0])"
    ),
}


@dataclass(frozen=True)
class KernelSpec:
    """One instantiation of a kernel body, as MLX would generate it.

    Attributes:
        kernel_name: MLX's mangled name (``custom_kernel_<name>_<template>_<dtypes>``).
        source: The body.
        header: Source placed before the function.
        inputs: ``(name, type string, ndim, size)`` per input.
        outputs: ``(name, type string)`` per output.
        template: ``(name, "typename" | "int" | "bool", value string)`` per parameter.
    """

    kernel_name: str
    source: str
    header: str
    inputs: tuple[tuple[str, str, int, int], ...]
    outputs: tuple[tuple[str, str], ...]
    template: tuple[tuple[str, str, str], ...]

    def shape_info(self, name: str) -> tuple[bool, bool, bool]:
        """Which of ``name_shape``, ``name_strides``, ``name_ndim`` the body mentions."""
        return tuple(f"{name}{suffix}" in self.source for suffix in ("_shape", "_strides", "_ndim"))

    def attributes(self) -> list[str]:
        """The thread attributes the body mentions (MLX's plain substring rule)."""
        used = [a for a in MLX_ATTRIBUTES if a in self.source]
        missing = [a for a in used if a not in ATTRIBUTES]
        if missing:
            raise NotImplementedError(f"the emulator cannot supply {missing}")
        return used


def have_compiler() -> bool:
    """Whether the C++ compiler the emulator uses is on PATH."""
    return shutil.which(CXX) is not None


def cache_dir() -> Path:
    """Directory for compiled kernels: ``$MLXLOAD_EMULATOR_CACHE`` or under the XDG cache."""
    explicit = os.environ.get("MLXLOAD_EMULATOR_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlxload-metal-emulator"


def _function(spec: KernelSpec, ns: str) -> str:
    params = []
    for name, ctype, ndim, size in spec.inputs:
        space = "constant" if size < MAX_CONSTANT_ARRAY_SIZE else "device"
        params.append(f"const {space} {ctype}{'&' if ndim == 0 else '*'} {name}")
        if ndim > 0:
            has_shape, has_strides, has_ndim = spec.shape_info(name)
            if has_shape:
                params.append(f"const constant int* {name}_shape")
            if has_strides:
                params.append(f"const constant int64_t* {name}_strides")
            if has_ndim:
                params.append(f"const constant int& {name}_ndim")
    params += [f"device {ctype}* {name}" for name, ctype in spec.outputs]
    attrs = spec.attributes()
    params += [f"{ATTRIBUTES[a]} {a}" for a in attrs]

    args = []
    for i, (name, ctype, ndim, _size) in enumerate(spec.inputs):
        args.append(f"*({ctype}*)ins[{i}]" if ndim == 0 else f"({ctype}*)ins[{i}]")
        if ndim > 0:
            has_shape, has_strides, has_ndim = spec.shape_info(name)
            if has_shape:
                args.append(f"shapes[{i}]")
            if has_strides:
                args.append(f"strides[{i}]")
            if has_ndim:
                args.append(f"ndims[{i}]")
    args += [f"({ctype}*)outs[{i}]" for i, (_n, ctype) in enumerate(spec.outputs)]
    args += [_ATTR_VALUE[a] for a in attrs]

    tparams = ", ".join(f"{kind} {name}" for name, kind, _v in spec.template)
    targs = ", ".join(value for _n, _k, value in spec.template)
    template_line = f"template <{tparams}>\n" if spec.template else ""
    instance = f"{spec.kernel_name}<{targs}>" if spec.template else spec.kernel_name
    return (
        f"namespace {ns} {{\n{spec.header}\n{template_line}"
        f"void {spec.kernel_name}(\n  {', '.join(params)}) {{\n{spec.source}\n}}\n}}\n"
        f'extern "C" void launch_{spec.kernel_name}(void** ins, const int* const* shapes,\n'
        "    const int64_t* const* strides, const int* ndims, void** outs,\n"
        "    const uint* grid, const uint* tg) {\n"
        "  for (uint z = 0; z < grid[2]; z++)\n"
        "    for (uint y = 0; y < grid[1]; y++)\n"
        "      for (uint x = 0; x < grid[0]; x++)\n"
        f"        {ns}::{instance}({', '.join(args)});\n"
        "}\n"
    )


def translation_unit(specs: Sequence[KernelSpec]) -> str:
    """The C++ source holding every spec's function and its ``launch_<name>`` entry point."""
    parts = ['#include "shim.h"\n']
    parts += [_function(spec, f"k{i}") for i, spec in enumerate(specs)]
    return "\n".join(parts)


_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL] = {}


def build(specs: Sequence[KernelSpec]) -> dict[str, ctypes._CFuncPtr]:
    """Compile (or reuse from the disk cache) one shared object holding all ``specs``.

    Returns:
        ``launch_<kernel_name>`` functions keyed by kernel name.
    """
    unique = list({s.kernel_name: s for s in specs}.values())
    text = translation_unit(unique)
    key = hashlib.sha256("\0".join([CXX, *FLAGS, SHIM.read_text(), text]).encode()).hexdigest()[:24]
    with _lock:
        lib = _loaded.get(key)
        if lib is None:
            out_dir = cache_dir()
            out_dir.mkdir(parents=True, exist_ok=True)
            so = out_dir / f"{key}.so"
            if not so.exists():
                _compile(text, so)
            lib = ctypes.CDLL(str(so))
            _loaded[key] = lib
    funcs = {}
    for spec in unique:
        fn = getattr(lib, f"launch_{spec.kernel_name}")
        fn.restype = None
        funcs[spec.kernel_name] = fn
    return funcs


def _compile(text: str, so: Path) -> None:
    with tempfile.TemporaryDirectory(dir=so.parent) as tmp:
        cpp = Path(tmp) / "kernels.cpp"
        cpp.write_text(text)
        target = Path(tmp) / so.name
        cmd = [CXX, *FLAGS, f"-I{SHIM.parent}", str(cpp), "-o", str(target)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"emulator compile failed:\n{proc.stderr}\n--- source ---\n{text}")
        os.replace(target, so)  # atomic: a concurrent run sees all of the file or none


class Launcher:
    """Argument marshalling for one compiled kernel."""

    def __init__(self, spec: KernelSpec, fn: ctypes._CFuncPtr) -> None:
        self.spec = spec
        self.fn = fn

    def __call__(
        self,
        inputs: Sequence[np.ndarray],
        outputs: Sequence[np.ndarray],
        grid: tuple[int, int, int],
        threadgroup: tuple[int, int, int],
    ) -> None:
        """Run the kernel over ``grid`` with C-contiguous numpy buffers (outputs written)."""
        keep = []
        n_in = max(len(inputs), 1)
        ins = (ctypes.c_void_p * n_in)()
        shapes = (ctypes.POINTER(ctypes.c_int) * n_in)()
        strides = (ctypes.POINTER(ctypes.c_int64) * n_in)()
        ndims = (ctypes.c_int * n_in)()
        for i, arr in enumerate(inputs):
            if not arr.flags.c_contiguous:
                raise ValueError("emulator inputs must be C-contiguous")
            ins[i] = arr.ctypes.data
            shape = np.asarray(arr.shape or (0,), dtype=np.int32)
            elem_strides = np.asarray(
                [s // arr.itemsize for s in arr.strides] or (0,), dtype=np.int64
            )
            keep += [shape, elem_strides]
            shapes[i] = shape.ctypes.data_as(ctypes.POINTER(ctypes.c_int))
            strides[i] = elem_strides.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
            ndims[i] = arr.ndim
        outs = (ctypes.c_void_p * len(outputs))(*[o.ctypes.data for o in outputs])
        # Metal clamps each threadgroup dimension to the grid's.
        tg = [min(t, g) or 1 for t, g in zip(threadgroup, grid, strict=True)]
        grid_c = (ctypes.c_uint * 3)(*grid)
        tg_c = (ctypes.c_uint * 3)(*tg)
        self.fn(ins, shapes, strides, ndims, outs, grid_c, tg_c)
        del keep


def launch(
    spec: KernelSpec,
    inputs: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    grid: tuple[int, int, int],
    threadgroup: tuple[int, int, int],
) -> None:
    """Compile ``spec`` if needed and run it once over ``grid``."""
    Launcher(spec, build([spec])[spec.kernel_name])(inputs, outputs, grid, threadgroup)
