"""Shared ``--model`` handling for the examples: a path, hf://org/repo, or the synthetic model."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_model_arguments", "model_path"]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="checkpoint directory or hf://org/repo (default: synthetic)"
    )
    parser.add_argument(
        "--size", default="small", help="synthetic model size when --model is not given"
    )


def model_path(args: argparse.Namespace) -> str:
    """The model to load: ``--model``, or a synthetic checkpoint (generated once)."""
    if args.model:
        return args.model
    from mlxload.synthetic import synthetic_checkpoint

    print(f"(no --model: using the synthetic {args.size} checkpoint)", file=sys.stderr)
    return str(synthetic_checkpoint(args.size))
