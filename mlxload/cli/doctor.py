"""``mlxload doctor``: check this machine (MLX backend, zero-copy, kernels, Hub cache).

Exits 1 when a check fails, after a line saying what to do about it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

__all__ = ["add_arguments", "main", "run"]

_MARK = {"ok": "ok  ", "info": "info", "warn": "warn", "fail": "FAIL"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from mlxload.doctor_checks import run_checks

    checks = run_checks()
    failed = [c for c in checks if c.status == "fail"]
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"[{_MARK[c.status]}] {c.name.ljust(width)}  {c.detail}")
            if c.fix and c.status in ("warn", "fail"):
                print(f"       {''.ljust(width)}  -> {c.fix}")
        print(
            f"{len(failed)} problem(s) found: fix the FAIL lines above"
            if failed
            else "everything mlxload needs works here"
        )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mlxload doctor`` with its own argument list; returns the exit code."""
    from mlxload.cli._main import verb_main

    return verb_main("doctor", add_arguments, run, argv, __doc__)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
