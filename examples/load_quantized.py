"""A walk through mlxload's quantization pieces, for people writing their own MLX model code.

    python examples/load_quantized.py [--model PATH]

1. ``mlxload.load`` opens a checkpoint lazily: a ``Mapping[str, mx.array]`` whose tensors are
   read on first access (``info`` tells dtype/shape/offset without reading).
2. ``QuantizationConfig`` says how each module is quantized (defaults plus per-module
   overrides, from ``config.json`` or ``quantization_config.json``).
3. ``load_quantized_weights`` groups each module's packed weight, scales and biases into a
   validated ``QuantizedWeight``, which can multiply, dequantize, or become an ``nn`` layer.
4. ``dequantize`` turns packed weights back into dense ones, bit-exact with ``mx.dequantize``
   (mlxload's Metal kernel on Apple GPUs, an exact and faster CPU path elsewhere).
"""

from __future__ import annotations

import sys

from _model_arg import example_parser, model_path, run_example


def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__)
    args = parser.parse_args(argv)

    import mlx.core as mx

    import mlxload
    from mlxload.dequant import dequantize, last_path
    from mlxload.quant_config import find_quantization_config
    from mlxload.quantized_load import load_quantized_weights

    # 1. Checkpoint: nothing but headers has been read yet.
    ckpt = mlxload.load(model_path(args))
    print(f"1. {ckpt!r}")
    first = next(iter(ckpt))
    info = ckpt.info(first)
    print(f"   {first}: {info.dtype} {list(info.shape)} ({info.nbytes} bytes, not read yet)")

    # 2. QuantizationConfig: the default spec and the per-module overrides.
    config = find_quantization_config(ckpt.root)
    if config is None and not any(n.endswith((".scales", ".qweight")) for n in ckpt):
        print("2. this checkpoint is not quantized; nothing more to show")
        return 0
    if config is not None:  # (without one, step 3 says what is wrong)
        overrides = config.per_tensor
        shown = ", ".join(f"{k}: {v}" for k, v in list(overrides.items())[:2])
        more = f" (and {len(overrides) - 2} more)" if len(overrides) > 2 else ""
        print(f"2. default {config.default}; {len(overrides)} per-module overrides{more}")
        if shown:
            print(f"   e.g. {shown}")

    # 3. QuantizedWeight: one per quantized module, validated against the config.
    weights = load_quantized_weights(ckpt, config=config)
    name, qw = next(
        ((n, w) for n, w in weights.items() if "q_proj" in n), next(iter(weights.items()))
    )
    print(f"3. {len(weights)} quantized modules; {name}: {qw!r}")
    if config is not None:
        print(f"   the config's spec for it: {config.for_tensor(name)}")
    x = mx.random.normal((1, qw.shape[-1]), key=mx.random.key(0)).astype(qw.dtype)
    y = x @ qw.dequantize().T  # the same product as qw.matmul(x), via the dense weight
    layer = qw.to_module()  # an nn.QuantizedLinear (nn.QuantizedEmbedding for embeddings)
    print(f"   as a layer: {type(layer).__name__}, output {list(layer(x).shape)}")
    print(f"   max |dense matmul - quantized layer| = {mx.abs(y - layer(x)).max().item():.2e}")

    # 4. dequantize: bit-exact with mx.dequantize, whichever path runs here.
    dense = dequantize(qw.weight, qw.scales, qw.biases, qw.group_size, qw.bits, mode=qw.mode)
    oracle = mx.dequantize(
        qw.weight, qw.scales, qw.biases, group_size=qw.group_size, bits=qw.bits, mode=qw.mode
    )
    same = bool(mx.array_equal(dense, oracle))
    print(
        f"4. dequantize ({last_path()}): {list(dense.shape)} {dense.dtype}, "
        f"equal to mx.dequantize: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(run_example(main))
