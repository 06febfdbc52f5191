"""``mlxload inspect PATH``: list a checkpoint's tensors without reading their data.

For a Hub repo only the metadata files and each shard's header are fetched (HTTP Range
requests), not the weights: a 70B model is inspected in seconds.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from mlxload.cli._main import write_out
from mlxload.cli._text import printable
from mlxload.cli.arg_types import at_least

__all__ = ["add_arguments", "main", "run"]

_NAME_WIDTH = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a .safetensors file, a directory, an index, or hf://org/repo")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--limit",
        type=at_least(0),
        default=None,
        help="list at most this many tensors (default: all; totals cover all)",
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> int:
    from mlxload.hub.spec import is_hub_spec

    return _inspect_hub(args) if is_hub_spec(args.path) else _inspect_loaded(args)


def _inspect_loaded(args: argparse.Namespace) -> int:
    """What ``mlxload.load`` opens (a Hub repo: downloaded, or from the cache)."""
    from mlxload.checkpoint import load

    with load(args.path) as ckpt:
        return _report(args, ckpt, [str(p) for p in ckpt.files], fetched=None)


def _inspect_hub(args: argparse.Namespace) -> int:
    """Headers of a Hub repo's shards, fetched as ranges (cached shards are read locally).

    Where that can't work (no metadata files to start from, a mirror that ignores Range, a
    cache another tool filled, offline), it does what ``load`` does: download, or use the
    cache, and the error if any is the one ``load`` gives.
    """
    from mlxload.distributed.source import open_source
    from mlxload.errors import CheckpointNotFoundError
    from mlxload.hub.errors import HubError

    source = ckpt = None
    try:
        source = open_source(args.path, fetch="ranges")
        ckpt = source.open()
    except (HubError, CheckpointNotFoundError):
        if source is not None:
            source.close()
        return _inspect_loaded(args)
    try:
        files = [source.repo_path(p) for p in ckpt.files]
        return _report(args, ckpt, files, fetched=source.fetched_bytes)
    finally:
        ckpt.close()
        source.close()


def _quantization(ckpt: Any, infos: list) -> Any:
    """The checkpoint's :class:`~mlxload.quant_summary.QuantSummary`, or None."""
    from mlxload.errors import MlxloadError
    from mlxload.quant_config import find_quantization_config
    from mlxload.quant_summary import summarize

    try:
        config, error = find_quantization_config(ckpt.root), None
    except MlxloadError as e:  # inspect lists the tensors anyway, and says what is wrong
        config, error = None, str(e)
    return summarize({i.name: i for i in infos}, config, config_error=error)


def _report(args: argparse.Namespace, ckpt: Any, files: list[str], fetched: int | None) -> int:
    from mlxload.tensor_file import zero_copy_supported
    from mlxload.writer import alignment_report

    infos = [ckpt.info(name) for name in ckpt]
    _warn_unindexed(ckpt)
    total = sum(i.nbytes for i in infos)
    misaligned = sum(i.nbytes for i in infos if not i.zero_copy_ready)
    by_dtype: dict[str, int] = {}
    for i in infos:
        by_dtype[i.dtype] = by_dtype.get(i.dtype, 0) + i.nbytes
    shown = infos if args.limit is None else infos[: args.limit]
    quantization = _quantization(ckpt, infos)
    if args.json:
        file_names = dict(zip(ckpt.files, files, strict=True))
        tensors = []
        for i in shown:
            path = ckpt.file_of(i.name)
            tensors.append({**i.as_dict(), "file": file_names.get(path, str(path))})
        write_out(
            orjson.dumps(
                {
                    "path": str(args.path),
                    "files": files,
                    "tensors": tensors,
                    "total_tensors": len(infos),
                    "total_bytes": total,
                    "bytes_by_dtype": by_dtype,
                    "bytes_needing_copy": misaligned,
                    "metadata": ckpt.metadata,
                    "quantization": quantization.as_dict() if quantization else None,
                    **({} if fetched is None else {"fetched_bytes": fetched}),
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
            + "\n"
        )
        return 0
    names = [printable(i.name) for i in shown]
    # At least the header's "name"; at most _NAME_WIDTH, so one very long name doesn't pad
    # every other row (a longer name just pushes its own row's columns right).
    width = min(max([4, *map(len, names)]), _NAME_WIDTH)
    dtype_width = max([5, *(len(i.dtype) for i in shown)])  # F8_E4M3FNUZ is 11
    print(f"{'name':<{width}}  {'dtype':<{dtype_width}} {'shape':<20} {'bytes':>10}  aligned")
    for name, i in zip(names, shown, strict=True):
        shape = "x".join(map(str, i.shape)) or "scalar"
        print(
            f"{name:<{width}}  {i.dtype:<{dtype_width}} {shape:<20} {_human(i.nbytes):>10}  "
            f"{'yes' if i.zero_copy_ready else 'no'}"
        )
    if len(shown) < len(infos):
        print(f"... {len(infos) - len(shown)} more")
    by = ", ".join(f"{d} {_human(b)}" for d, b in sorted(by_dtype.items()))
    print(
        f"\n{_count(len(infos), 'tensor')} in {_count(len(ckpt.files), 'file')}, "
        f"{_human(total)}" + (f" ({by})" if by else "")
    )
    if quantization is not None:
        print(quantization.line())
    if ckpt.metadata:
        shown_meta = list(ckpt.metadata.items())[:8]
        items = [f"{printable(k)}={_short(printable(v))}" for k, v in shown_meta]
        more = f", ... {len(ckpt.metadata) - 8} more" if len(ckpt.metadata) > 8 else ""
        print(f"metadata: {', '.join(items)}{more}")
    headers = ckpt.headers()
    if fetched is not None:
        if fetched == 0:  # every header was in the local cache already (offline, say)
            print("(read from the local Hub cache: nothing fetched)")
        elif fetched >= sum(h.file_size for h in headers):  # each under one header read
            print(f"(from the Hub: {_human(fetched)}, the whole files: they are that small)")
        else:
            print(
                f"(from the Hub: {_human(fetched)} fetched for the headers; the weights were not)"
            )
    report = alignment_report(headers)
    print(report.verdict(_align_command(args.path, fetched is not None)))
    if not report.ready and not zero_copy_supported():
        print(
            "(zero-copy is for Apple silicon: on this backend every tensor is copied once "
            "either way, so aligning only helps where the files will be used on a Mac)"
        )
    return 0


def _short(text: str, limit: int = 60) -> str:
    """A metadata value cut to one table line (a chat template can be kilobytes)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _warn_unindexed(ckpt: Any) -> None:
    """Name the tensors a stale index leaves out: they are in no figure of the report, and
    loading through the index won't see them (``merge`` and ``split`` refuse such a source)."""
    import warnings

    from mlxload.checkpoint import unindexed_note

    unindexed = ckpt.unindexed()
    if unindexed:
        warnings.warn(
            f"{unindexed_note(ckpt.root, unindexed)}; they are not counted here, and loading "
            "through the index won't see them",
            stacklevel=2,
        )


def _align_command(path: str, remote: bool) -> str:
    """The ``mlxload align`` to run for ``path``: a Hub repo (or its cached copy) can't be
    rewritten in place, so it gets an output directory."""
    from mlxload.hub.cache import in_hf_cache
    from mlxload.hub.spec import is_hub_spec

    quoted = shlex.quote(path)
    local = not remote and not is_hub_spec(path) and not in_hf_cache(Path(path))
    return f"mlxload align {quoted}" if local else f"mlxload align {quoted} OUTDIR"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mlxload inspect`` with its own argument list; returns the exit code."""
    from mlxload.cli._main import verb_main

    return verb_main("inspect", add_arguments, run, argv, __doc__)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
