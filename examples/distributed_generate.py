"""Generate with a model split across processes (MLX distributed), each rank reading only its part.

Run it with MLX's launcher, e.g. two processes on this machine::

    mlx.launch --backend ring -n 2 --python "$(which python)" \\
        examples/distributed_generate.py --model hf://org/repo --fetch ranges

Every rank loads its share with ``mlxload.load_model(..., tensor_group=group)`` (or
``pipeline_group`` with ``--pipeline``): the blocks of each split layer it keeps, and for Hub
repos with ``--fetch ranges`` only those bytes over the network. All ranks then run the same
generation (their layers exchange results through the group); rank 0 prints the text, and
every rank prints one line about its load on stderr.

Without ``--model`` it runs a synthetic Llama: use tensor parallelism (the default) and
``--size small`` or larger; ``tiny``'s layers are a single 64-wide quantization group, which
can't be split, and mlx-lm's Llama has no pipeline split for ``--pipeline``.
"""

from __future__ import annotations

import sys

from _model_arg import example_parser, model_path, run_example


def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__, prompt=True, max_tokens=32)
    parser.add_argument(
        "--pipeline", action="store_true", help="split the decoder layers instead of each layer"
    )
    parser.add_argument(
        "--fetch",
        choices=("files", "ranges"),
        default="files",
        help="for hf:// repos: download the shards needed, or only the bytes read (default: files)",
    )
    args = parser.parse_args(argv)

    import mlx.core as mx
    from mlx_lm import stream_generate

    from mlxload.model import load_model

    group = mx.distributed.init()
    rank = group.rank()
    split = {"pipeline_group" if args.pipeline else "tensor_group": group}
    model, tokenizer, _ = load_model(model_path(args), fetch=args.fetch, **split)
    report = model.load_report
    fetched = (
        f"fetched {report.bytes_fetched / 2**20:.1f} MiB as ranges, "
        if report.bytes_fetched
        else ""
    )
    print(
        f"[rank {rank}/{group.size()}] read {report.bytes_read / 2**20:.1f} MiB "
        f"({100 * report.fraction_read:.0f}% of the model), {fetched}peak RSS "
        f"{report.peak_rss_bytes / 2**20:.0f} MiB, {report.timings['total']:.2f} s",
        file=sys.stderr,
        flush=True,
    )
    prompt = args.prompt
    if tokenizer.chat_template is not None:
        messages = [{"role": "user", "content": prompt}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    for response in stream_generate(model, tokenizer, prompt, max_tokens=args.max_tokens):
        if rank == 0:
            print(response.text, end="", flush=True)
    if rank == 0:
        print()
    # mlx-lm has already started one more step on every rank; a rank leaving before the others
    # finish it breaks their connections ("[ring] connection to a peer was lost"). Wait here.
    mx.eval(mx.distributed.all_sum(mx.array(1), group=group))
    return 0


if __name__ == "__main__":
    sys.exit(run_example(main))
