"""Every error mlxload raises on purpose.

All of them derive from :class:`MlxloadError`, so ``except mlxload.MlxloadError`` catches
anything mlxload reports about bad input. Header validation has one class per rule under
:class:`SafetensorsError` (a ``ValueError``), so tests and callers can tell the rules apart.
Each message names the file, the tensor where there is one, the rule, and the offending values.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "DataSizeMismatchError",
    "DuplicateFieldError",
    "DuplicateTensorError",
    "FileChangedError",
    "FileClosedError",
    "FilePermissionError",
    "FileTooSmallError",
    "HeaderEncodingError",
    "HeaderJSONError",
    "HeaderLengthError",
    "HeaderNotObjectError",
    "HeaderTooLargeError",
    "IndexFileError",
    "InvalidArgumentError",
    "InvalidDataOffsetsError",
    "InvalidMetadataError",
    "InvalidShapeError",
    "MemoryLimitError",
    "MissingFieldError",
    "MissingShardError",
    "MlxloadError",
    "NestingTooDeepError",
    "NonContiguousOffsetsError",
    "NotARegularFileError",
    "RangeNotFetchedError",
    "SafetensorsError",
    "SizeOverflowError",
    "SubByteAlignmentError",
    "TensorEntryError",
    "TensorIndexError",
    "TensorNotFoundError",
    "TensorNotInShardError",
    "TensorSizeMismatchError",
    "TooManyOpenFilesError",
    "UnknownDtypeError",
    "UnsupportedIndexError",
    "UnsupportedShapeError",
]


class MlxloadError(Exception):
    """Base class of every error mlxload raises about its input or environment."""


class InvalidArgumentError(MlxloadError, ValueError):
    """An argument outside the values a function takes (``zero_copy="false"``, ``align=1``);
    the message names the argument, the value given and the values it takes."""


class SafetensorsError(MlxloadError, ValueError):
    """A safetensors file breaks a rule of the format. Subclasses name the rule."""


class FileTooSmallError(SafetensorsError):
    """The file is shorter than the 8-byte header length prefix."""


class HeaderTooLargeError(SafetensorsError):
    """The declared header length is over the 100 MB limit the reference library applies."""


class HeaderLengthError(SafetensorsError):
    """The declared header length runs past the end of the file."""


class HeaderEncodingError(SafetensorsError):
    """The header bytes are not valid UTF-8."""


class HeaderJSONError(SafetensorsError):
    """The header is not valid JSON."""


class HeaderNotObjectError(SafetensorsError):
    """The header is JSON but not an object (it must start with ``{``)."""


class TensorEntryError(SafetensorsError):
    """A tensor's entry in the header is not a JSON object."""


class DuplicateFieldError(SafetensorsError):
    """A tensor entry repeats ``dtype``, ``shape`` or ``data_offsets``, or the header repeats
    ``__metadata__`` (readers that keep the first or the last value would disagree)."""


class NestingTooDeepError(SafetensorsError):
    """The header nests arrays/objects deeper than the reference parser allows (127 levels)."""


class MissingFieldError(SafetensorsError):
    """A tensor entry lacks ``dtype``, ``shape`` or ``data_offsets``."""


class UnknownDtypeError(SafetensorsError):
    """A tensor's ``dtype`` is not a string naming a safetensors dtype."""


class InvalidShapeError(SafetensorsError):
    """A tensor's ``shape`` is not a list of non-negative integers."""


class InvalidDataOffsetsError(SafetensorsError):
    """A tensor's ``data_offsets`` is not two non-negative integers with begin <= end."""


class SizeOverflowError(SafetensorsError):
    """shape x element size overflows 64 bits."""


class TensorSizeMismatchError(SafetensorsError):
    """shape x element size differs from ``end - begin`` of ``data_offsets``."""


class SubByteAlignmentError(SafetensorsError):
    """A sub-byte dtype (F4, F6_*) whose element count does not end on a whole byte."""


class NonContiguousOffsetsError(SafetensorsError):
    """Tensors in offset order leave a gap, overlap, or do not start at 0."""


class DataSizeMismatchError(SafetensorsError):
    """The data section is shorter or longer than the last tensor's end offset."""


class InvalidMetadataError(SafetensorsError):
    """``__metadata__`` is not a map from strings to strings."""


class NotARegularFileError(MlxloadError, OSError):
    """The path is a directory, FIFO, device or socket where a safetensors file is expected."""


class FileClosedError(MlxloadError, ValueError):
    """A read from a file that was closed (as Python's "I/O operation on closed file")."""


class FileChangedError(MlxloadError, OSError):
    """The file was truncated or replaced after it was opened; its bytes can't be trusted."""


class RangeNotFetchedError(MlxloadError, OSError):
    """A read of bytes that a partly fetched file doesn't hold (only a Hub file fetched range
    by range is partial): it would have returned zeros instead of the model's numbers."""


class FilePermissionError(MlxloadError, PermissionError):
    """The OS refused to open or list a checkpoint's file or directory (a ``PermissionError``
    too)."""

    def __str__(self) -> str:
        return self.strerror if self.strerror is not None else super().__str__()


class TooManyOpenFilesError(MlxloadError, OSError):
    """The process may not open one more file (``EMFILE``): a checkpoint with more shards than
    the open-file limit allows, even after raising it."""

    def __str__(self) -> str:
        return self.strerror if self.strerror is not None else super().__str__()


class UnsupportedShapeError(MlxloadError, ValueError):
    """A valid tensor whose shape MLX can't hold: an ``mx.array`` dimension is 32-bit."""


class MemoryLimitError(MlxloadError, MemoryError):
    """A tensor (or block) to copy that is larger than this machine's memory: refused before
    MLX is asked for it."""


class TensorIndexError(MlxloadError, IndexError):
    """An index that doesn't fit the tensor (out of bounds, too many indices, a float...), as
    numpy would refuse it; an ``IndexError`` too."""


class UnsupportedIndexError(MlxloadError, ValueError):
    """A valid index that the tensor's storage can't serve as asked: rows or columns of a
    sub-byte dtype that don't end on whole bytes, or a slice of a scalar."""


class TensorNotFoundError(MlxloadError, KeyError):
    """A tensor name that the file or checkpoint does not contain."""

    _name: object = None
    _names: Iterable[str] = ()

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        message = str(self.args[0]) if self.args else ""
        if isinstance(self._name, str):
            import difflib

            close = difflib.get_close_matches(self._name, list(self._names), n=1, cutoff=0.8)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return message

    @classmethod
    def among(cls, message: str, name: object, names: Iterable[str]) -> TensorNotFoundError:
        """The error for ``name``, naming the closest of ``names`` when one is close.

        The search waits until the message is shown: ``Mapping.get`` and ``in`` catch this
        error unseen, and a search through 5,000 names for each would cost milliseconds.

        Example:
            >>> str(TensorNotFoundError.among("no tensor 'lm_haed.weight'", "lm_haed.weight",
            ...                               ["lm_head.weight", "norm.weight"]))
            "no tensor 'lm_haed.weight' (did you mean 'lm_head.weight'?)"
        """
        error = cls(message)
        error._name, error._names = name, names
        return error


class CheckpointError(MlxloadError, ValueError):
    """A checkpoint (directory, index, shards) is inconsistent or incomplete."""


class _NotFound(FileNotFoundError):  # (first among the bases: ValueError has an __init__ too)
    """A ``FileNotFoundError`` that reads as our message, with ``errno`` (``ENOENT``) and
    ``filename`` (the path, when there is one) as any has."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.errno = errno.ENOENT
        self.filename = None if path is None else str(path)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointNotFoundError(_NotFound, CheckpointError):
    """The checkpoint path (file, directory or index) does not exist (a ``FileNotFoundError``
    too)."""


class IndexFileError(CheckpointError):
    """``model.safetensors.index.json`` is not valid JSON or lacks a ``weight_map``."""


class MissingShardError(CheckpointError):
    """A shard file the index names does not exist, or (without an index) a numbered set of
    shards (``model-0000i-of-0000N``) lacks some."""


class DuplicateTensorError(CheckpointError):
    """The same tensor name is stored in two shards."""


class TensorNotInShardError(CheckpointError):
    """The index says a tensor is in a shard, but that shard's header does not list it."""
