"""How much of a checkpoint is zero-copy ready: per tensor, and bytes needing a copy."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlxload.header import FileHeader, read_header
from mlxload.shards import CheckpointFiles, checkpoint_files

__all__ = ["AlignmentReport", "TensorAlignment", "alignment_report"]


@dataclass(frozen=True)
class TensorAlignment:
    """One tensor's alignment.

    Attributes:
        name, file, dtype: Where and what it is.
        offset: Absolute file offset of its first byte.
        nbytes: Its size.
        alignment: Element size its offset must be a multiple of.
        zero_copy_ready: ``offset % alignment == 0``.
    """

    name: str
    file: Path
    dtype: str
    offset: int
    nbytes: int
    alignment: int
    zero_copy_ready: bool


@dataclass
class AlignmentReport:
    """Alignment of every tensor of a checkpoint.

    Attributes:
        tensors: One entry per tensor, in file then offset order.
    """

    tensors: list[TensorAlignment] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def copy_bytes(self) -> int:
        """Bytes of tensors that are not aligned and must be copied to be used."""
        return sum(t.nbytes for t in self.tensors if not t.zero_copy_ready)

    @property
    def misaligned(self) -> list[TensorAlignment]:
        return [t for t in self.tensors if not t.zero_copy_ready]

    @property
    def copy_percent(self) -> float:
        """Share of bytes needing a copy, 0-100 (0 for an empty checkpoint)."""
        total = self.total_bytes
        return 100.0 * self.copy_bytes / total if total else 0.0

    @property
    def ready(self) -> bool:
        """Every tensor is aligned."""
        return not self.misaligned

    def verdict(self, command: str = "mlxload align") -> str:
        """One line for ``mlxload inspect``.

        Args:
            command: The command the line tells to run, e.g. ``mlxload align PATH``.

        Returns:
            ``"zero-copy ready: 100% of bytes"`` or ``"37% of bytes need a copy — run `mlxload
            align`"``; a nonzero share never rounds to 0% or, unless all bytes, to 100%.
        """
        if self.ready:
            return "zero-copy ready: 100% of bytes"
        pct = self.copy_percent
        shown = 100 if self.copy_bytes == self.total_bytes else min(99, max(1, round(pct)))
        return f"{shown}% of bytes need a copy — run `{command}`"


def alignment_report(
    path_or_files: str | os.PathLike | CheckpointFiles | Iterable[FileHeader],
) -> AlignmentReport:
    """Per-tensor zero-copy readiness of a checkpoint, from headers only.

    Args:
        path_or_files: A file, directory or index path; a
            :class:`~mlxload.shards.CheckpointFiles`; or already-read headers.

    Returns:
        An :class:`AlignmentReport`.

    Raises:
        FileNotFoundError, CheckpointError, SafetensorsError: as the header readers raise.
    """
    if isinstance(path_or_files, (str, os.PathLike)):
        path_or_files = checkpoint_files(path_or_files)
    if isinstance(path_or_files, CheckpointFiles):
        headers = [read_header(f) for f in path_or_files.files]
    else:
        headers = list(path_or_files)
    return AlignmentReport(
        [
            TensorAlignment(
                t.name, h.path, t.dtype, t.offset, t.nbytes, t.alignment, t.zero_copy_ready
            )
            for h in headers
            for t in h.tensors.values()
        ]
    )
