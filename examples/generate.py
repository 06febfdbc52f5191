"""One prompt in, text out, plus tokens/s: ``python examples/generate.py --prompt "Hello"``.

The model is loaded with ``mlxload.load_model`` (float32 compute on CPU, the checkpoint's
dtype on GPU) and generated with mlx-lm's ``stream_generate``.
"""

from __future__ import annotations

import sys
import time

from _model_arg import example_parser, model_path, run_example


def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__, prompt=True, max_tokens=64, temp=0.0)
    parser.add_argument("--no-chat-template", action="store_true", help="send the raw prompt")
    args = parser.parse_args(argv)

    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from mlxload.model import load_model

    start = time.perf_counter()
    model, tokenizer, _ = load_model(model_path(args))
    report = model.load_report
    print(
        f"loaded in {report.timings['total']:.2f} s ({report.backend}, "
        f"compute dtype {report.compute_dtype}, zero-copy {report.zero_copy})",
        file=sys.stderr,
    )
    prompt = args.prompt
    if not args.no_chat_template and tokenizer.chat_template is not None:
        messages = [{"role": "user", "content": prompt}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    last = None
    ttft = None
    for response in stream_generate(
        model, tokenizer, prompt, max_tokens=args.max_tokens, sampler=make_sampler(args.temp)
    ):
        if ttft is None:
            ttft = time.perf_counter() - start
        print(response.text, end="", flush=True)
        last = response
    print()
    if last is not None:
        print(
            f"{last.generation_tokens} tokens, {last.generation_tps:.1f} tokens/s "
            f"(prompt: {last.prompt_tokens} tokens, {last.prompt_tps:.1f} tokens/s); "
            f"time to first token from start of loading: {ttft:.2f} s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_example(main))
