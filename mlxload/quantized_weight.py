"""One quantized tensor in MLX's layout: packed uint32 words plus per-group scales (and biases).

Layout (what ``mx.quantize`` writes): the packed weight has shape ``(..., K * bits / 32)`` and
holds one little-endian bit stream per row; scales (and, for affine, biases) have shape
``(..., K / group_size)``. Affine dequantization is ``w = q * scale + bias`` per group.

Example:
    >>> import mlx.core as mx
    >>> w, s, b = mx.quantize(mx.ones((8, 64)), group_size=64, bits=4)
    >>> qw = QuantizedWeight(w, s, b, bits=4, group_size=64, name="proj")
    >>> qw.shape, qw.num_groups
    ((8, 64), 1)
    >>> bool(mx.array_equal(qw.dequantize(), mx.dequantize(w, s, b, group_size=64, bits=4)))
    True
"""

from __future__ import annotations

import math
import re

import mlx.core as mx
import mlx.nn as nn

from mlxload.backend import MLX_FOR_ONE_BIT, dtype_name, mlx_quantizes_bits
from mlxload.dequant import FLOAT_DTYPES
from mlxload.dequant import dequantize as _affine_dequantize
from mlxload.quant_config import AFFINE_BITS, AFFINE_GROUP_SIZES, FP_MODES, MODES, QuantSpec
from mlxload.quant_errors import QuantizedWeightError

__all__ = ["QuantizedWeight"]

_FLOAT_DTYPES = FLOAT_DTYPES
# Last path component of modules that are embeddings (embed_tokens, wte, word_embeddings, ...).
# (GPT-NeoX's embed_out is its output Linear, not an embedding.)
_EMBEDDING_NAME = re.compile(
    r"(^|\.)(embed_tokens|embeddings?|word_embeddings|wte|wpe|tok_embeddings)(\.weight)?$"
)


class QuantizedWeight:
    """A packed weight with its scales and biases, checked for consistency on construction.

    Args:
        weight: Packed ``uint32`` array, shape ``(..., K * bits / 32)``, at least 2-D.
        scales: Per-group scales, shape ``(..., K / group_size)``; the model dtype for affine,
            ``uint8`` for mxfp4/nvfp4/mxfp8.
        biases: Per-group biases like ``scales``; required for affine, absent otherwise.
        bits, group_size, mode: How it was quantized.
        name: Module path, for messages and for :meth:`to_module` to guess the layer kind.
        global_scale: nvfp4 only: the per-matrix float32 tensor scale that mlx-lm's
            ``quantize_model(..., global_scale=True)`` stores for MoE experts; shape
            ``weight.shape[:-2]`` (``()`` for one matrix, ``(experts,)`` for stacked experts).

    Raises:
        QuantizedWeightError: the arrays disagree with each other or with bits/group size;
            the message gives the expected and actual shapes/dtypes.
    """

    __slots__ = ("biases", "bits", "global_scale", "group_size", "mode", "name", "scales", "weight")

    def __init__(
        self,
        weight: mx.array,
        scales: mx.array,
        biases: mx.array | None = None,
        *,
        bits: int,
        group_size: int,
        mode: str = "affine",
        name: str = "",
        global_scale: mx.array | None = None,
    ) -> None:
        self.weight = weight
        self.scales = scales
        self.biases = biases
        self.bits = bits
        self.group_size = group_size
        self.mode = mode
        self.name = name
        self.global_scale = global_scale
        self._check()

    @classmethod
    def from_spec(
        cls,
        spec: QuantSpec,
        weight: mx.array,
        scales: mx.array,
        biases: mx.array | None = None,
        *,
        name: str = "",
        global_scale: mx.array | None = None,
    ) -> QuantizedWeight:
        """Build from a :class:`~mlxload.quant_config.QuantSpec` (as a config's ``for_tensor``)."""
        return cls(
            weight,
            scales,
            biases,
            bits=spec.bits,
            group_size=spec.group_size,
            mode=spec.mode,
            name=name,
            global_scale=global_scale,
        )

    def _mlx_computes(self) -> bool:
        """Whether MLX's own quantized ops take this width (1-bit affine: MLX 0.32.4 on)."""
        return self.mode != "affine" or mlx_quantizes_bits(self.bits)

    # ---------------------------------------------------------------- validation

    def _fail(self, what: str) -> QuantizedWeightError:
        label = f"quantized weight {self.name!r}" if self.name else "quantized weight"
        return QuantizedWeightError(f"{label}: {what}")

    def _check(self) -> None:
        bits, group_size, mode = self.bits, self.group_size, self.mode
        if type(bits) is not int or type(group_size) is not int:
            raise self._fail(f"bits and group_size must be integers, got {bits!r}, {group_size!r}")
        if mode not in MODES:
            raise self._fail(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "affine":
            if bits not in AFFINE_BITS:
                raise self._fail(f"bits={bits}; affine supports {', '.join(map(str, AFFINE_BITS))}")
            if group_size not in AFFINE_GROUP_SIZES:
                raise self._fail(
                    f"group_size={group_size}; affine supports "
                    f"{', '.join(map(str, AFFINE_GROUP_SIZES))}"
                )
        elif (bits, group_size) != FP_MODES[mode]:
            want_bits, want_group = FP_MODES[mode]
            raise self._fail(
                f"mode {mode} requires bits={want_bits} and group_size={want_group}, "
                f"got bits={bits} and group_size={group_size}"
            )
        w, s, b = self.weight, self.scales, self.biases
        if w.dtype != mx.uint32:
            raise self._fail(f"packed weight dtype is {dtype_name(w.dtype)}; expected uint32")
        if w.ndim < 2:
            raise self._fail(f"packed weight shape {tuple(w.shape)} must have at least 2 dims")
        words = w.shape[-1]
        if (words * 32) % bits:
            per = bits // math.gcd(bits, 32)
            raise self._fail(
                f"packed weight has {words} uint32 words per row; {bits}-bit values fill "
                f"whole rows only with a multiple of {per} words "
                f"({32 * per // bits} values per {per} words)"
            )
        k = words * 32 // bits
        if k % group_size:
            raise self._fail(
                f"row length {k} ({words} words x 32 / {bits} bits) is not a multiple of "
                f"group_size {group_size}"
            )
        want = (*w.shape[:-1], k // group_size)
        if tuple(s.shape) != want:
            raise self._fail(
                f"scales shape {tuple(s.shape)} != expected {want}: packed weight "
                f"{tuple(w.shape)} holds {k} {bits}-bit values per row = "
                f"{k // group_size} group{'s' * (k // group_size != 1)} of {group_size}"
            )
        if mode == "affine":
            if s.dtype not in _FLOAT_DTYPES:
                raise self._fail(
                    f"scales dtype is {dtype_name(s.dtype)}; affine scales are float16, bfloat16 "
                    "or float32"
                )
            if b is None:
                raise self._fail("affine quantization needs biases, but none were given")
            if tuple(b.shape) != want:
                raise self._fail(f"biases shape {tuple(b.shape)} != scales shape {want}")
            if b.dtype != s.dtype:
                raise self._fail(
                    f"biases dtype {dtype_name(b.dtype)} != scales dtype {dtype_name(s.dtype)}"
                )
        else:
            if s.dtype != mx.uint8:
                raise self._fail(f"scales dtype is {dtype_name(s.dtype)}; {mode} scales are uint8")
            if b is not None:
                raise self._fail(f"mode {mode} has no biases, but biases were given")
        self._check_global_scale()

    def _check_global_scale(self) -> None:
        g = self.global_scale
        if g is None:
            return
        if self.mode != "nvfp4":
            raise self._fail(f"a global scale belongs to nvfp4 only; mode is {self.mode}")
        want = tuple(self.weight.shape[:-2])
        if g.dtype != mx.float32 or tuple(g.shape) != want:
            raise self._fail(
                f"global scale is {dtype_name(g.dtype)} {tuple(g.shape)}; expected float32 "
                f"{want}, one per matrix of the packed weight {tuple(self.weight.shape)}"
            )

    # ---------------------------------------------------------------- properties

    @property
    def spec(self) -> QuantSpec:
        """``QuantSpec(bits, group_size, mode)``."""
        return QuantSpec(self.bits, self.group_size, self.mode)

    @property
    def shape(self) -> tuple[int, ...]:
        """Logical (unpacked) shape: last dim = packed words x 32 / bits."""
        return (*self.weight.shape[:-1], self.weight.shape[-1] * 32 // self.bits)

    @property
    def dtype(self) -> mx.Dtype:
        """Dtype :meth:`dequantize` returns by default: the scales' for affine, else bfloat16."""
        return self.scales.dtype if self.mode == "affine" else mx.bfloat16

    @property
    def element_count(self) -> int:
        """Number of logical elements (product of :attr:`shape`)."""
        return math.prod(self.shape)

    @property
    def num_groups(self) -> int:
        """Number of quantization groups along the last dimension (per row)."""
        return self.shape[-1] // self.group_size

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed weight, scales, biases and global scale together."""
        parts = (self.weight, self.scales, self.biases, self.global_scale)
        return sum(a.nbytes for a in parts if a is not None)

    def __repr__(self) -> str:
        return (
            f"QuantizedWeight({self.name!r}, shape={self.shape}, dtype={dtype_name(self.dtype)}, "
            f"bits={self.bits}, group_size={self.group_size}, mode={self.mode!r}, "
            f"biases={self.biases is not None}, "
            + ("global_scale=True, " if self.global_scale is not None else "")
            + f"nbytes={self.nbytes})"
        )

    # ---------------------------------------------------------------- compute

    def dequantize(self, dtype: mx.Dtype | None = None) -> mx.array:
        """The dense weight, bit-exact with ``mx.dequantize``.

        Affine weights go through :func:`mlxload.dequant.dequantize` (the custom kernels), other
        modes through ``mx.dequantize``.

        Args:
            dtype: Output dtype; default :attr:`dtype`.

        Returns:
            An array of shape :attr:`shape`.
        """
        if self.global_scale is not None:
            return self._dequantize_per_matrix(dtype)
        if self.mode == "affine":
            return _affine_dequantize(
                self.weight, self.scales, self.biases, self.group_size, self.bits, dtype=dtype
            )
        return mx.dequantize(
            self.weight,
            self.scales,
            self.biases,
            group_size=self.group_size,
            bits=self.bits,
            mode=self.mode,
            dtype=dtype,
        )

    def _dequantize_per_matrix(self, dtype: mx.Dtype | None) -> mx.array:
        # mx.dequantize takes a scalar global scale only: one call per matrix. It also returns
        # float32 whatever dtype it is asked for (MLX 0.32, CPU), hence the cast.
        dtype = dtype or self.dtype
        w, s, g = self.weight, self.scales, self.global_scale
        rows, words, groups = w.shape[-2], w.shape[-1], s.shape[-1]
        w, s, g = w.reshape(-1, rows, words), s.reshape(-1, rows, groups), g.reshape(-1)
        if w.shape[0] == 0:  # no matrices (zero experts)
            return mx.zeros(self.shape, dtype=dtype)
        dense = [
            mx.dequantize(
                w[i], s[i], group_size=self.group_size, bits=self.bits, mode=self.mode,
                global_scale=g[i], dtype=dtype,
            ).astype(dtype)
            for i in range(w.shape[0])
        ]  # fmt: skip
        return mx.stack(dense).reshape(self.shape)

    def matmul(self, x: mx.array) -> mx.array:
        """``x @ W.T`` (what a linear layer computes) via ``mx.quantized_matmul``.

        For a stacked weight (``(experts, rows, cols)``) the leading dims broadcast as in
        ``x @ mx.swapaxes(W, -1, -2)``: a 2-D ``x`` gives one result per expert.

        With a global scale, which ``mx.quantized_matmul`` doesn't take (``gather_qmm`` takes
        it on the GPU only), the product is ``x`` times the dequantized weight: the same
        values, summed in another order than MLX's GPU kernel sums them. So is a 1-bit weight
        under an MLX older than 0.32.4, whose ``quantized_matmul`` has no 1-bit.
        """
        if x.ndim == 1:  # (a vector: the same product, its axes as x @ W.T gives them)
            return self._qmm(x[None], transpose=True)[..., 0, :]
        return self._qmm(x, transpose=True)

    def __matmul__(self, x: mx.array) -> mx.array:
        """``W @ x`` for a 1-D or 2-D ``x`` whose first dim is the row length (per expert for a
        stacked weight)."""
        if x.ndim == 1:
            return self._qmm(x[None], transpose=True)[..., 0, :]
        return mx.swapaxes(self._qmm(mx.swapaxes(x, -1, -2), transpose=True), -1, -2)

    def _qmm(self, x: mx.array, *, transpose: bool) -> mx.array:
        if x.ndim < self.weight.ndim:
            # quantized_matmul would use only the first matrix of a stacked weight here.
            x = x.reshape((1,) * (self.weight.ndim - x.ndim) + tuple(x.shape))
        if self.global_scale is not None or not self._mlx_computes():
            if x.dtype not in _FLOAT_DTYPES:
                got = dtype_name(x.dtype)
                raise self._fail(f"x must be float16, bfloat16 or float32, got {got}")
            dense = self.dequantize(x.dtype)
            return x @ (mx.swapaxes(dense, -1, -2) if transpose else dense)
        return mx.quantized_matmul(
            x,
            self.weight,
            self.scales,
            self.biases,
            transpose=transpose,
            group_size=self.group_size,
            bits=self.bits,
            mode=self.mode,
        )

    def to_module(
        self, kind: str | None = None, *, bias: mx.array | None = None
    ) -> nn.QuantizedLinear | nn.QuantizedEmbedding:
        """An ``mlx.nn`` layer whose parameters are these very arrays (no copy).

        Args:
            kind: ``"linear"`` or ``"embedding"``; by default an embedding when the name's
                last component looks like one (``embed_tokens``, ``wte``, ...), else linear.
            bias: Optional output bias for a linear layer (e.g. the checkpoint's ``.bias``).

        Returns:
            ``nn.QuantizedLinear`` or ``nn.QuantizedEmbedding``, frozen like MLX's own.

        Raises:
            QuantizedWeightError: unknown ``kind``, a bias for an embedding, a weight that isn't
                2-D, a global scale (``mlx.nn``'s quantized layers have none), or a 1-bit weight
                under an MLX older than 0.32.4.
        """
        if kind is None:
            kind = "embedding" if _EMBEDDING_NAME.search(self.name) else "linear"
        if kind not in ("linear", "embedding"):
            raise self._fail(f"kind must be 'linear' or 'embedding', got {kind!r}")
        if self.weight.ndim != 2:
            raise self._fail(f"to_module needs a 2-D weight, shape is {self.shape}")
        if self.global_scale is not None:
            raise self._fail(
                "mlx.nn's quantized layers take no global scale; use dequantize() or matmul()"
            )
        if not self._mlx_computes():
            raise self._fail(
                f"MLX {mx.__version__} has no {self.bits}-bit quantized layers (they came with "
                f"MLX {MLX_FOR_ONE_BIT}): pip install -U mlx, or use dequantize() or matmul()"
            )
        rows, cols = self.shape
        # Built without calling __init__: the constructors draw and quantize a random matrix,
        # which costs time and advances MLX's global random state.
        if kind == "linear":
            module = nn.QuantizedLinear.__new__(nn.QuantizedLinear)
        else:
            if bias is not None:
                raise self._fail("an embedding has no output bias")
            module = nn.QuantizedEmbedding.__new__(nn.QuantizedEmbedding)
            module.num_embeddings, module.dims = rows, cols
        nn.Module.__init__(module)
        module.group_size, module.bits, module.mode = self.group_size, self.bits, self.mode
        module.weight, module.scales = self.weight, self.scales
        module.biases = self.biases
        if bias is not None:
            module.bias = bias
        module.freeze()
        return module
