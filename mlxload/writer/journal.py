"""The resume journal: a small JSON file beside a temporary output.

It records a digest of what is being written (the output's plan and its sources' identity)
and how many tensors of the temporary file are complete *and flushed*. A rerun with the same
digest continues after the last such tensor; any other digest means the journal is stale.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from mlxload.fd_write import write_all
from mlxload.work_names import work_path

__all__ = ["JOURNAL_VERSION", "JournalState", "load_journal", "remove_quietly", "save_journal"]

JOURNAL_VERSION = 1


@dataclass
class JournalState:
    """What a journal says.

    Attributes:
        digest: Hash of the output's plan and sources (see ``plan.OutputPlan.digest``).
        tensors_done: Tensors fully written and flushed, in output order.
        bytes_done: Tensor bytes those cover.
        complete: Every tensor is written and flushed; the file is renamed into place next.
        resumes: How many runs continued from this journal (for diagnostics and tests).
    """

    digest: str
    tensors_done: int = 0
    bytes_done: int = 0
    complete: bool = False
    resumes: int = 0


def load_journal(path: Path, digest: str) -> JournalState | None:
    """The journal at ``path`` if it exists, parses and matches ``digest``; else None."""
    try:
        obj = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if type(obj) is not dict or obj.get("version") != JOURNAL_VERSION:
        return None
    if obj.get("digest") != digest:
        return None
    try:
        state = JournalState(
            digest=digest,
            tensors_done=int(obj["tensors_done"]),
            bytes_done=int(obj["bytes_done"]),
            complete=bool(obj["complete"]),
            resumes=int(obj.get("resumes", 0)),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if min(state.tensors_done, state.bytes_done, state.resumes) < 0:
        return None  # not something a run writes: don't trust any of it
    return state


def save_journal(path: Path, state: JournalState) -> None:
    """Write the journal atomically (temporary file, fsync, rename)."""
    tmp = work_path(path, "tmp")
    data = orjson.dumps({"version": JOURNAL_VERSION, **asdict(state)})
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)  # (a short write would leave a journal no run could read)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def remove_quietly(*paths: Path) -> None:
    """Remove files that may not exist, ignoring every OS error (a read-only or vanished
    directory): cleanup never hides the error that made it necessary."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
