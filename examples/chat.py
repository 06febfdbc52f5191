"""Interactive chat with any mlx-lm-compatible model, loaded through mlxload.

    python examples/chat.py --model path/or/hf://org/repo [--max-tokens 256] [--temp 0.7]

Type a message and press Enter; ``/reset`` forgets the conversation; Ctrl-D, Ctrl-C or
``/quit`` leaves. Each reply is streamed and followed by its time to first token.
"""

from __future__ import annotations

import sys
import time

from _model_arg import example_parser, model_path, run_example


def _prompt(tokenizer, messages: list[dict[str, str]]):
    """The chat-templated conversation, or, for a model without a chat template (a base
    model), the last message as a raw prompt, as generate.py sends it."""
    if tokenizer.chat_template is None:
        return messages[-1]["content"]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)


def _reply(model, tokenizer, messages, args, sampler) -> str:
    from mlx_lm import stream_generate

    prompt = _prompt(tokenizer, messages)
    start = time.perf_counter()
    ttft = None
    pieces = []
    last = None
    for response in stream_generate(
        model, tokenizer, prompt, max_tokens=args.max_tokens, sampler=sampler
    ):
        if ttft is None:
            ttft = time.perf_counter() - start
        print(response.text, end="", flush=True)
        pieces.append(response.text)
        last = response
    print()
    if last is not None:
        print(
            f"[ttft {ttft * 1e3:.0f} ms, {last.generation_tokens} tokens, "
            f"{last.generation_tps:.1f} tokens/s]",
            file=sys.stderr,
        )
    return "".join(pieces)


def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__, max_tokens=256, temp=0.7)
    parser.add_argument("--system", default=None, help="system prompt")
    args = parser.parse_args(argv)

    from mlx_lm.sample_utils import make_sampler

    from mlxload.model import load_model

    model, tokenizer, _ = load_model(model_path(args))
    report = model.load_report
    print(
        f"loaded in {report.timings['total']:.2f} s ({report.backend}, compute dtype "
        f"{report.compute_dtype}); /reset clears the chat, Ctrl-D or /quit exits",
        file=sys.stderr,
    )
    if tokenizer.chat_template is None:
        print(
            "(this model has no chat template: each message is sent alone as a raw prompt)",
            file=sys.stderr,
        )
    sampler = make_sampler(args.temp)
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    try:
        while True:
            try:
                line = input("> ")
            except EOFError:
                print(file=sys.stderr)
                break
            text = line.strip()
            if not text:
                continue
            if text == "/quit":
                break
            if text == "/reset":
                messages = list(system)
                continue
            messages.append({"role": "user", "content": text})
            messages.append(
                {"role": "assistant", "content": _reply(model, tokenizer, messages, args, sampler)}
            )
    except KeyboardInterrupt:
        print("\n(interrupted)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_example(main))
