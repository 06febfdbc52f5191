"""The ``mlxload`` command: one module per verb, each with ``add_arguments``, ``run`` and ``main``.

``mlxload VERB ...`` imports only the module of the verb it runs, so ``mlxload --version`` and
``mlxload inspect`` never import mlx-lm or huggingface_hub.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mlxload._version import __version__
from mlxload.cli._main import run_verb

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, str] = {
    "inspect": "List the tensors of a checkpoint (dtype, shape, bytes, zero-copy readiness).",
    "bench": "Time to first token: mlxload vs mx.load vs mlx_lm.load.",
    "merge": "Merge a sharded checkpoint into one aligned safetensors file (streaming).",
    "split": "Split a checkpoint into shards of bounded size with an index (streaming).",
    "align": "Rewrite a checkpoint so every tensor is aligned for zero-copy.",
    "download": "Download a Hub model (parallel, resumable, sha256-verified).",
    "doctor": "Check this machine: MLX backend, zero-copy, kernels, Hub cache.",
}


def _verb_module(verb: str):
    return importlib.import_module(f"mlxload.cli.{verb}")


def build_parser(verbs: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser; sub-parsers are added only for ``verbs`` (all by default)."""
    parser = argparse.ArgumentParser(
        prog="mlxload", description="Load safetensors checkpoints into MLX, fast and exactly."
    )
    parser.add_argument("--version", action="version", version=f"mlxload {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb in verbs if verbs is not None else COMMANDS:
        try:
            module = _verb_module(verb)
        except ModuleNotFoundError as e:
            if e.name != f"mlxload.cli.{verb}":
                raise
            continue
        p = sub.add_parser(verb, help=COMMANDS[verb], description=COMMANDS[verb])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlxload`` console script. Returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([verb] if verb in COMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    return run_verb(args.verb, args._run, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
