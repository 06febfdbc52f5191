"""``mlxload download REPO``: fetch a Hub model into the HF cache and print its path."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``download`` arguments to ``parser``."""
    # Optional only so that a REPO swallowed by --include gets an error that says so.
    parser.add_argument(
        "repo", nargs="?", metavar="REPO", help="org/name or hf://org/name[@revision] (required)"
    )
    parser.add_argument("--revision", help="branch, tag or commit (default: main)")
    parser.add_argument(
        "--include",
        action="append",
        nargs="+",
        metavar="PATTERN",
        help="fetch exactly the files matching these globs instead of the default selection "
        "(safetensors weights, *.json configs, tokenizer files); repeatable",
    )
    parser.add_argument(
        "--workers", type=int, default=8, help="files downloaded at once (default: 8)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--offline", action="store_true", help="use only the local cache; no network request"
    )
    parser.add_argument("--cache-dir", help="Hub cache (default: HF_HUB_CACHE)")
    parser.add_argument(
        "--local-dir",
        help="also copy the files into this directory (plain files, not cache symlinks); "
        "files of the same name already there are replaced",
    )


def run(args: argparse.Namespace) -> int:
    """Download, then print the snapshot directory (or ``--local-dir``). Returns 0, or 2 for
    a usage error (as argparse does)."""
    from mlxload.hub import download

    patterns = [p for group in args.include for p in group] if args.include else None
    usage = _usage_error(args, patterns)
    if usage is not None:
        print(f"mlxload download: error: {usage}", file=sys.stderr)
        return 2
    path = download(
        args.repo,
        args.revision,
        allow_patterns=patterns,
        workers=args.workers,
        progress=False if args.no_progress else None,
        cache_dir=args.cache_dir,
        local_files_only=True if args.offline else None,
    )
    if args.local_dir is not None:
        from mlxload.hub.local_dir import export_snapshot

        path = export_snapshot(path, Path(args.local_dir).expanduser(), patterns)
    print(path)
    return 0


def _usage_error(args: argparse.Namespace, patterns: list[str] | None) -> str | None:
    if args.workers < 1:
        return f"--workers must be at least 1, got {args.workers}"
    for flag, value in (("--cache-dir", args.cache_dir), ("--local-dir", args.local_dir)):
        if value == "":
            # Path("") is the current directory: an unset $DEST would fill (or overwrite) it.
            return f"{flag} is empty; give a directory (is the variable you meant unset?)"
        if value is not None and Path(value).expanduser().is_file():
            return f"{flag} {value} is a file; give a directory"
    if args.repo is None:
        hint = (
            f" (--include took every value after it: {patterns}); put REPO first, "
            "`mlxload download REPO --include PAT...`, or end the patterns with `--`"
            if patterns
            else " (usage: mlxload download REPO [--include PAT...]; see --help)"
        )
        return f"no REPO given{hint}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mlxload download`` on its own. Returns the exit code (1 on an mlxload error)."""
    from mlxload.cli._main import verb_main

    return verb_main("download", add_arguments, run, argv, __doc__)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
