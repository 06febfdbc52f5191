"""Shared pieces of the examples: ``--model`` handling (a path, hf://org/repo, or the synthetic
model) and the error handler that turns mlxload's errors into one line on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from mlxload.cli.arg_types import at_least
from mlxload.errors import MlxloadError
from mlxload.synthetic.spec import SIZES

__all__ = ["add_model_arguments", "example_parser", "model_path", "run_example"]

DEFAULT_PROMPT = "Tell me a story about a small robot."


def example_parser(
    doc: str, *, prompt: bool = False, max_tokens: int | None = None, temp: float | None = None
) -> argparse.ArgumentParser:
    """The parser an example starts from: the first line of its docstring, ``--model`` and
    ``--size``, and whichever generation options it takes (with these defaults)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0].replace("``", ""))
    add_model_arguments(parser)
    if prompt:
        parser.add_argument(
            "--prompt", default=DEFAULT_PROMPT, help="the prompt (default: %(default)r)"
        )
    if max_tokens is not None:
        parser.add_argument(
            "--max-tokens",
            type=at_least(1),  # mlx-lm refuses 0 and reads a negative count as no limit
            default=max_tokens,
            help="tokens to generate at most (default: %(default)s)",
        )
    if temp is not None:
        parser.add_argument(
            "--temp",
            type=float,
            default=temp,
            help="sampling temperature, 0 = greedy (default: %(default)s)",
        )
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="checkpoint directory or hf://org/repo (default: synthetic)"
    )
    parser.add_argument(
        "--size",
        default="small",
        choices=tuple(SIZES),
        help="synthetic model size when --model is not given (default: small)",
    )


def model_path(args: argparse.Namespace) -> str:
    """The model to load: ``--model``, or a synthetic checkpoint (generated once)."""
    if args.model:
        return args.model
    from mlxload.synthetic import synthetic_checkpoint

    print(f"(no --model: using the synthetic {args.size} checkpoint)", file=sys.stderr)
    return str(synthetic_checkpoint(args.size))


def run_example(main: Callable[[], int]) -> int:
    """Run ``main``; an mlxload error or ``OSError`` (as ``mlxload.load`` raises for a missing
    path) prints ``SCRIPT: error: MESSAGE`` and returns 1, as the ``mlxload`` command does;
    Ctrl-C prints ``SCRIPT: interrupted`` and returns 130."""
    try:
        return main()
    except (MlxloadError, OSError) as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{Path(sys.argv[0]).name}: interrupted", file=sys.stderr)
        return 130
