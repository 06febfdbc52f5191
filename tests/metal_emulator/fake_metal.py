"""A stand-in for ``mx.fast.metal_kernel`` that runs kernels through the C++ emulator.

It takes exactly the real construction and call signatures, rejects what real MLX would
reject (and a few things that are certainly bugs, such as an unused template parameter),
counts constructions so tests can check that kernels are built once, and returns real
``mx.array`` outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from . import emulator

__all__ = ["MLX_TYPE_NAMES", "FakeKernel", "FakeMetal"]

# Type names MLX writes into generated Metal source (get_type_string).
MLX_TYPE_NAMES: dict[mx.Dtype, str] = {
    mx.float32: "float",
    mx.float16: "float16_t",
    mx.bfloat16: "bfloat16_t",
    mx.bool_: "bool",
    mx.int8: "int8_t",
    mx.int16: "int16_t",
    mx.int32: "int32_t",
    mx.int64: "int64_t",
    mx.uint8: "uint8_t",
    mx.uint16: "uint16_t",
    mx.uint32: "uint32_t",
    mx.uint64: "uint64_t",
}

# numpy stand-ins for the buffers (bfloat16 travels as its raw 16 bits).
_NP: dict[mx.Dtype, Any] = {
    mx.float32: np.float32,
    mx.float16: np.float16,
    mx.bfloat16: np.uint16,
    mx.bool_: np.bool_,
    mx.int8: np.int8,
    mx.int16: np.int16,
    mx.int32: np.int32,
    mx.int64: np.int64,
    mx.uint8: np.uint8,
    mx.uint16: np.uint16,
    mx.uint32: np.uint32,
    mx.uint64: np.uint64,
}

MAX_THREADS_PER_THREADGROUP = 1024
_MATH_MODES = ("safe", "relaxed", "fast")


def _to_numpy(a: mx.array) -> np.ndarray:
    if a.dtype == mx.bfloat16:
        a = a.view(mx.uint16)
    return np.ascontiguousarray(np.array(a, copy=True))


def _from_numpy(a: np.ndarray, dtype: mx.Dtype) -> mx.array:
    out = mx.array(a)
    return out.view(mx.bfloat16) if dtype == mx.bfloat16 else out


def _check_dim3(value: Any, what: str, minimum: int) -> tuple[int, int, int]:
    if not isinstance(value, tuple) or len(value) != 3:
        raise TypeError(f"[metal_kernel] `{what}` must be a tuple of 3 ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError(f"[metal_kernel] `{what}` must hold ints, got {value!r}")
    if any(v < minimum or v >= 2**32 for v in value):
        raise ValueError(f"[metal_kernel] `{what}` values out of range: {value!r}")
    return value


def _template_value(name: str, value: Any) -> tuple[str, str, str]:
    if isinstance(value, bool):
        return (name, "bool", "1" if value else "0")  # MLX streams bools as 1/0
    if isinstance(value, int):
        return (name, "int", str(value))
    if isinstance(value, mx.Dtype):
        return (name, "typename", MLX_TYPE_NAMES[value])
    raise TypeError(f"[metal_kernel] template argument {name!r} has unsupported type {value!r}")


def _template_hash(values: Sequence[str]) -> str:
    # make_template_hash("<a, b>") == "_a_b"
    return "_" + "_".join(values)


class FakeKernel:
    """What :meth:`FakeMetal.metal_kernel` returns: callable like the real kernel object."""

    def __init__(
        self,
        owner: FakeMetal,
        name: str,
        input_names: list[str],
        output_names: list[str],
        source: str,
        header: str,
        ensure_row_contiguous: bool,
    ) -> None:
        self.owner = owner
        self.name = name
        self.input_names = input_names
        self.output_names = output_names
        self.source = source
        self.header = header
        self.ensure_row_contiguous = ensure_row_contiguous
        self.calls: list[dict[str, Any]] = []

    def spec(
        self,
        inputs: Sequence[mx.array],
        output_dtypes: Sequence[mx.Dtype],
        template: Sequence[tuple[str, Any]],
    ) -> emulator.KernelSpec:
        """The emulator spec (and MLX's kernel name) for one call."""
        targs = [_template_value(n, v) for n, v in template]
        kernel_name = "custom_kernel_" + self.name
        if targs:
            kernel_name += "_" + _template_hash([v for _n, _k, v in targs])
        for a in inputs:
            kernel_name += "_" + MLX_TYPE_NAMES[a.dtype]
            if a.ndim == 0:
                kernel_name += "s"
            elif a.size < emulator.MAX_CONSTANT_ARRAY_SIZE:
                kernel_name += "c"
        for d in output_dtypes:
            kernel_name += "_" + MLX_TYPE_NAMES[d]
        return emulator.KernelSpec(
            kernel_name=kernel_name,
            source=self.source,
            header=self.header,
            inputs=tuple(
                (n, MLX_TYPE_NAMES[a.dtype], a.ndim, a.size)
                for n, a in zip(self.input_names, inputs, strict=True)
            ),
            outputs=tuple(
                (n, MLX_TYPE_NAMES[d])
                for n, d in zip(self.output_names, output_dtypes, strict=True)
            ),
            template=tuple(targs),
        )

    def __call__(
        self,
        *,
        inputs: Sequence[mx.array],
        output_shapes: Sequence[Sequence[int]],
        output_dtypes: Sequence[mx.Dtype],
        grid: tuple[int, int, int],
        threadgroup: tuple[int, int, int],
        template: Sequence[tuple[str, Any]] | None = None,
        init_value: float | None = None,
        verbose: bool = False,
        stream: Any = None,
    ) -> list[mx.array]:
        """Validate the call as MLX does, then run it through the emulator."""
        inputs = list(inputs)
        template = list(template or [])
        for what, got, want in (
            ("inputs", len(inputs), len(self.input_names)),
            ("output_shapes", len(output_shapes), len(self.output_names)),
            ("output_dtypes", len(output_dtypes), len(self.output_names)),
        ):
            if got != want:
                raise ValueError(
                    f"[metal_kernel] Expected `{what}` to have size {want} but got size {got}."
                )
        if not all(isinstance(a, mx.array) for a in inputs):
            raise TypeError("[metal_kernel] the fake accepts mx.array inputs only")
        for d in output_dtypes:
            if d not in MLX_TYPE_NAMES:
                raise ValueError(f"[metal_kernel] unsupported output dtype {d}")
        for shape in output_shapes:
            if not all(isinstance(n, int) and n >= 0 for n in shape):
                raise ValueError(f"[metal_kernel] bad output shape {shape!r}")
        grid = _check_dim3(grid, "grid", 0)
        threadgroup = _check_dim3(threadgroup, "threadgroup", 1)
        if threadgroup[0] * threadgroup[1] * threadgroup[2] > MAX_THREADS_PER_THREADGROUP:
            raise ValueError(
                f"Thread group size ({np.prod(threadgroup)}) is greater than the maximum "
                f"allowed threads per threadgroup ({MAX_THREADS_PER_THREADGROUP})."
            )
        names = [n for n, _v in template]
        if len(set(names)) != len(names):
            raise ValueError(f"[metal_kernel] duplicate template names {names}")
        unused = [n for n in names if n not in self.source]
        if unused:
            raise ValueError(f"[metal_kernel] template parameters not used in the source: {unused}")

        spec = self.spec(inputs, output_dtypes, template)
        self.calls.append(
            {
                "spec": spec,
                "grid": grid,
                "threadgroup": threadgroup,
                "output_shapes": [tuple(s) for s in output_shapes],
            }
        )
        outs = []
        for shape, dtype in zip(output_shapes, output_dtypes, strict=True):
            if init_value is None:
                # Uninitialised on a GPU: fill with NaN bytes so unwritten elements show.
                buf = np.empty(tuple(shape), dtype=_NP[dtype])
                buf.view(np.uint8)[...] = 0xFF
            else:
                buf = _to_numpy(mx.full(tuple(shape), init_value, dtype=dtype))
            outs.append(np.ascontiguousarray(buf))
        if not self.owner.plan_only:
            host_inputs = [_to_numpy(mx.contiguous(a)) for a in inputs]
            self.owner.launcher(spec)(host_inputs, outs, grid, threadgroup)
        return [_from_numpy(o, d) for o, d in zip(outs, output_dtypes, strict=True)]


class FakeMetal:
    """Factory with the real ``metal_kernel`` signature, plus build counting.

    Attributes:
        built: ``name`` of every kernel constructed, in order.
        plan_only: When True, calls record their specs but don't run (see :meth:`compile_planned`).
    """

    def __init__(self, plan_only: bool = False) -> None:
        self.built: list[str] = []
        self.kernels: list[FakeKernel] = []
        self.plan_only = plan_only
        self._launchers: dict[str, emulator.Launcher] = {}

    def metal_kernel(
        self,
        name: str,
        input_names: Sequence[str],
        output_names: Sequence[str],
        source: str,
        header: str = "",
        ensure_row_contiguous: bool = True,
        atomic_outputs: bool = False,
        compile_options: dict[str, str] | None = None,
    ) -> FakeKernel:
        """Construct a kernel object, validating arguments as MLX does."""
        if not output_names:
            raise ValueError("[metal_kernel] Must specify at least one output.")
        for n in [name, *input_names, *output_names]:
            if not isinstance(n, str) or not n.isidentifier():
                raise ValueError(f"[metal_kernel] names must be identifiers, got {n!r}")
        if not isinstance(source, str) or not isinstance(header, str):
            raise TypeError("[metal_kernel] source and header must be str")
        if atomic_outputs:
            raise NotImplementedError("the emulator has no atomic outputs")
        if compile_options is not None:
            unknown = set(compile_options) - {"math_mode"}
            if unknown or compile_options.get("math_mode", "safe") not in _MATH_MODES:
                raise ValueError(f"[metal_kernel] bad compile_options {compile_options!r}")
        kernel = FakeKernel(
            self,
            name,
            list(input_names),
            list(output_names),
            source,
            header,
            ensure_row_contiguous,
        )
        self.built.append(name)
        self.kernels.append(kernel)
        return kernel

    def launcher(self, spec: emulator.KernelSpec) -> emulator.Launcher:
        """The compiled launcher for ``spec`` (compiling it alone if no batch built it)."""
        key = spec.kernel_name + str(hash(spec.source))
        if key not in self._launchers:
            fn = emulator.build([spec])[spec.kernel_name]
            self._launchers[key] = emulator.Launcher(spec, fn)
        return self._launchers[key]

    def compile_planned(self) -> int:
        """Compile every spec recorded so far in one translation unit; returns how many."""
        specs = {c["spec"].kernel_name: c["spec"] for k in self.kernels for c in k.calls}
        funcs = emulator.build(list(specs.values()))
        for spec in specs.values():
            key = spec.kernel_name + str(hash(spec.source))
            self._launchers[key] = emulator.Launcher(spec, funcs[spec.kernel_name])
        return len(specs)

    def adopt(self, other: FakeMetal) -> None:
        """Reuse ``other``'s compiled launchers (e.g. from a planning run)."""
        self._launchers.update(other._launchers)
