"""Errors raised by the checkpoint writer (merge, split, align).

All derive from :class:`WriterError`, itself an :class:`~mlxload.errors.MlxloadError`, and also
from the builtin a caller would expect (``FileExistsError``, ``OSError``, ``ValueError``).
"""

from __future__ import annotations

import errno

from mlxload.errors import InvalidArgumentError, MlxloadError

__all__ = [
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
    "WriteFailedError",
    "WriterArgumentError",
    "WriterError",
    "write_failed",
]


class WriterError(MlxloadError):
    """Base class of every error the writer raises."""


class OutputHeaderTooLargeError(WriterError, ValueError):
    """An output's header would exceed the 100 MB safetensors readers accept."""


class OutputExistsError(WriterError, FileExistsError):
    """An output file already exists and ``force`` was not given."""


class OutputBusyError(WriterError, BlockingIOError):
    """Another process is writing the same output (it holds the output's lock file)."""


class OutputIsSourceError(WriterError, ValueError):
    """An output would replace one of the source files it is made from (merge/split into the
    source's own files); only ``align`` may rewrite a file in place."""


class OutputNameError(WriterError, ValueError):
    """An output file named without ``.safetensors``: ``mx.load`` and mlx-lm wouldn't read it."""


class OutputNotADirectoryError(WriterError, NotADirectoryError):
    """The output directory (or a directory it would be created in) is an existing file."""


class _OSErrorMessage(WriterError, OSError):
    """Built as ``Error(errno, message)``: ``errno`` is kept, ``str()`` is the message alone."""

    def __str__(self) -> str:
        return self.strerror if self.strerror is not None else super().__str__()


class InsufficientSpaceError(_OSErrorMessage):
    """The destination's free space is less than the output needs (checked before writing;
    on macOS, where purgeable space counts as used, only a warning)."""


class WriteFailedError(_OSErrorMessage):
    """Writing failed (disk full, file too large, I/O error); temporary files were removed."""


class MetadataConflictError(WriterError, ValueError):
    """Two sources give different values for the same ``__metadata__`` key."""


class InvalidSizeError(WriterError, ValueError):
    """A size such as ``max_shard_size`` could not be parsed or is not positive."""


class WriterArgumentError(WriterError, InvalidArgumentError):
    """An argument the writer can't take: an unknown ``on_conflict``, no output path.
    (An :class:`~mlxload.errors.InvalidArgumentError` too.)"""


class EmptySourceError(WriterError, ValueError):
    """A split of a checkpoint without tensors: its index could name no shard."""


class SourceNotFoundError(WriterError, FileNotFoundError):
    """The source checkpoint does not exist (or an ``hf://`` source cannot be resolved)."""


_CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EFBIG: "the file size limit was reached (ulimit -f or the filesystem's maximum)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EIO: "an I/O error occurred",
    errno.EROFS: "the destination is read-only",
}
_NO_PERMISSION = (errno.EACCES, errno.EPERM)


def write_failed(e: OSError, path: object, *, kept: bool = False) -> WriteFailedError:
    """The :class:`WriteFailedError` for an OS error met while writing ``path``; ``kept``:
    its complete copy stays under its hidden work name (the rename failed)."""
    said = e.strerror or str(e)
    if e.errno in _NO_PERMISSION:
        where = e.filename if e.filename is not None else path
        cause = f"no permission to write {where} ({said}): check who owns its directory"
    elif e.errno in _CAUSES:
        cause = f"{_CAUSES[e.errno]} ({said})"
    else:
        cause = said
    if kept:
        return WriteFailedError(
            e.errno or errno.EIO,
            f"putting {path} in place failed: {cause}; its complete copy is kept under a "
            "hidden work name beside it",
        )
    return WriteFailedError(
        e.errno or errno.EIO,
        f"writing {path} failed: {cause}; no partial output is left, and nothing was written "
        "under that name",
    )
