"""Stopping parallel transfers at once: a failure in one of them, or Ctrl-C, stops the others.

:func:`run_all` runs the transfers on threads and sets a :class:`StopSignal` on the first
failure or Ctrl-C. Each transfer checks the signal between chunks. One blocked waiting for
bytes from a stalled server would notice only when its read timed out (30 s), so setting the
signal also shuts down the sockets of the responses being read, which wakes those reads with an
error at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

__all__ = ["Cancelled", "StopSignal", "run_all"]

T = TypeVar("T")

POLL_S = 0.5
"""How often the waiting thread wakes: a Ctrl-C delivered to a worker thread instead of the
main one is seen within this (a wait on a result alone would sleep until it came)."""


class Cancelled(Exception):  # a signal between threads, never shown to users
    """Another transfer failed (or Ctrl-C): this one stopped early (its bytes are kept)."""


class StopSignal(threading.Event):
    """A :class:`threading.Event` that also wakes the transfers it watches when set.

    Example:
        >>> stop = StopSignal()
        >>> stop.set(); stop.is_set()
        True
    """

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()
        self._watched: dict[socket.socket, Any] = {}  # socket -> the response read from it

    def set(self) -> None:
        super().set()
        with self._guard:
            for sock, response in self._watched.items():
                _shut(sock, response)

    @contextlib.contextmanager
    def watching(self, response: Any) -> Iterator[None]:
        """While the body of ``response`` (an ``httpx`` response) is read: setting the
        signal shuts down its connection, so a read blocked on it fails at once.

        (Not before its headers: a server silent until then is waited for up to the read
        timeout. httpx shows no connection before it has a response.)"""
        sock = _socket_of(response)
        if sock is None:
            yield
            return
        with self._guard:
            self._watched[sock] = response
            if self.is_set():  # set before the socket was registered: set() didn't see it
                _shut(sock, response)
        try:
            yield
        finally:
            with self._guard:
                self._watched.pop(sock, None)


def _socket_of(response: Any) -> socket.socket | None:
    """The socket under an ``httpx`` response (None where the transport doesn't say)."""
    stream = getattr(response, "extensions", {}).get("network_stream")
    try:
        sock = stream.get_extra_info("socket") if stream is not None else None
    except Exception:  # a transport without the extra: the read timeout still applies
        return None
    return sock if isinstance(sock, socket.socket) else None


def _shut(sock: socket.socket, response: Any) -> None:
    """Shut down the connection of a response still being read.

    A response read to its end has handed its connection back to the pool, where another
    request may be using it now: that one is left alone. The raw socket is shut, under any
    TLS: ``SSLSocket.shutdown`` unwraps the TLS object first, and a reader caught in between
    fails with a ValueError instead of a transport error.
    """
    if getattr(response, "is_closed", False):
        return
    with contextlib.suppress(OSError):  # already closed or shut down
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def run_all(
    jobs: Sequence[Callable[[], T]],
    workers: int,
    stop: StopSignal,
    on_finished: Callable[[int], None] = lambda done: None,
) -> list[T]:
    """Run ``jobs`` on up to ``workers`` threads; the first failure or Ctrl-C stops the rest.

    Args:
        jobs: The transfers; each raises :class:`Cancelled` once ``stop`` is set.
        workers: Threads at most.
        stop: Set on the first failure, or when this thread is interrupted.
        on_finished: Called with the count of jobs finished so far, as they finish.

    Returns:
        Each job's result, in order.

    Raises:
        The first failure other than :class:`Cancelled`; ``KeyboardInterrupt`` once every job
        has stopped.
    """
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        futures: list[Future[T]] = []
        pending: set[Future[T]] = set()
        try:
            futures += (pool.submit(job) for job in jobs)
            pending.update(futures)
            while pending:
                finished, pending = wait(pending, timeout=POLL_S, return_when=FIRST_EXCEPTION)
                on_finished(len(futures) - len(pending))
                if any(f.exception() is not None for f in finished):
                    break
        finally:
            if pending:  # a failure or Ctrl-C: stop the others now
                stop.set()
                for f in pending:
                    f.cancel()
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    real = [e for e in errors if not isinstance(e, Cancelled)]
    if real or errors:
        raise (real or errors)[0]
    return [f.result() for f in futures]
