"""Text from checkpoints, made safe to print to a terminal."""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: object) -> str:
    """``str(text)`` with every non-printable character escaped (``\\x1b``, ``\\n``, ...).

    Tensor and shard names come from the files: printed raw, an escape sequence in one could
    clear the screen, set the window title or clipboard, or a newline could forge a row.
    Printable non-ASCII (accents, CJK, emoji) is kept as it is.

    Example:
        >>> printable("w\\x1b[2J\\nx")
        'w\\\\x1b[2J\\\\nx'
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
