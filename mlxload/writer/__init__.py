"""Streaming, bounded-memory, atomic, resumable safetensors writer: merge, split, align.

Plan from source headers (:mod:`.plan`), then copy file-to-file (:mod:`.execute`). Every file
written is aligned: data section on a 16 KiB boundary, tensors by descending alignment.
"""

from __future__ import annotations

from mlxload.writer.api import align, merge, split
from mlxload.writer.errors import (
    EmptySourceError,
    InsufficientSpaceError,
    InvalidSizeError,
    MetadataConflictError,
    OutputBusyError,
    OutputExistsError,
    OutputHeaderTooLargeError,
    OutputIsSourceError,
    OutputNameError,
    OutputNotADirectoryError,
    SourceNotFoundError,
    WriteFailedError,
    WriterArgumentError,
    WriterError,
)
from mlxload.writer.execute import WriteResult
from mlxload.writer.layout import PAGE_SIZE
from mlxload.writer.report import AlignmentReport, TensorAlignment, alignment_report
from mlxload.writer.sizes import parse_size

__all__ = [
    "PAGE_SIZE",
    "AlignmentReport",
    "EmptySourceError",
    "InsufficientSpaceError",
    "InvalidSizeError",
    "MetadataConflictError",
    "OutputBusyError",
    "OutputExistsError",
    "OutputHeaderTooLargeError",
    "OutputIsSourceError",
    "OutputNameError",
    "OutputNotADirectoryError",
    "SourceNotFoundError",
    "TensorAlignment",
    "WriteFailedError",
    "WriteResult",
    "WriterArgumentError",
    "WriterError",
    "align",
    "alignment_report",
    "merge",
    "parse_size",
    "split",
]
