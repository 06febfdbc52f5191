"""Stopping parallel transfers at once: a failure in one of them, or Ctrl-C, stops the others.

:func:`run_all` runs the transfers on threads and sets a :class:`StopSignal` on the first
failure or Ctrl-C. Each transfer checks the signal between chunks. One blocked waiting for
bytes from a stalled server would notice only when its read timed out (30 s), so setting the
signal also shuts down the sockets of the responses being read, which wakes those reads with an
error at once. A transfer still waiting for its response's headers has no socket to shut: after
a short grace :func:`run_all` returns without it, and it ends on its daemon thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import Any, TypeVar

__all__ = ["Cancelled", "StopSignal", "run_all"]

T = TypeVar("T")

POLL_S = 0.5
"""How often the waiting thread wakes: a Ctrl-C delivered to a worker thread instead of the
main one is seen within this (a wait on a result alone would sleep until it came)."""

GRACE_S = 2.0
"""After a stop, how long :func:`run_all` waits for the transfers to end before it returns
without those still waiting for a server's first answer."""


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

        (Not before its headers: httpx shows no connection before it has a response. See
        :func:`run_all` for those.)"""
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
        has stopped, or :data:`GRACE_S` after the stop, whichever comes first.
    """
    if not jobs:
        return []
    futures: list[Future[T]] = [Future() for _ in jobs]
    pending: set[Future[T]] = set(futures)
    try:
        # Inside the try: a Ctrl-C or "can't start new thread" after some threads started
        # must stop those too, or they would run every job unwatched after we returned.
        _start_workers(jobs, futures, max(1, min(workers, len(jobs))), stop)
        while pending:
            finished, pending = wait(pending, timeout=POLL_S, return_when=FIRST_EXCEPTION)
            on_finished(len(futures) - len(pending))
            if any(f.exception() is not None for f in finished):
                break
    finally:
        if pending:  # a failure or Ctrl-C: stop the others now
            stop.set()
            for f in pending:
                f.cancel()  # those not started yet
            # Those waiting for a response's headers can't be woken (no socket to shut yet):
            # they are left to end on their own, on daemon threads. Jobs must own what they
            # write through (a blob lock, their own descriptor) and check the stop before
            # each write, since they may outlive this call.
            wait(pending, timeout=GRACE_S)
    done = [f for f in futures if f.done() and not f.cancelled()]
    errors = [f.exception() for f in done if f.exception() is not None]
    real = [e for e in errors if not isinstance(e, Cancelled)]
    if real or errors:
        raise (real or errors)[0]
    return [f.result() for f in futures]


def _start_workers(
    jobs: Sequence[Callable[[], T]], futures: list[Future[T]], threads: int, stop: StopSignal
) -> None:
    """Start ``threads`` daemon threads that run the jobs in order into their futures.

    Daemon threads rather than a ThreadPoolExecutor: the interpreter joins an executor's
    threads at exit, so a transfer stuck until its read timeout would hold up a Ctrl-C'd
    program for up to 30 s after :func:`run_all` had already returned.
    """
    order = iter(range(len(jobs)))
    take = threading.Lock()

    def work() -> None:
        while True:
            with take:
                i = next(order, None)
            if i is None:
                return
            if not futures[i].set_running_or_notify_cancel():
                continue
            try:
                if stop.is_set():  # (every future must end, or run_all would wait for ever)
                    raise Cancelled()
                futures[i].set_result(jobs[i]())
            except BaseException as e:  # handed to the waiting thread
                futures[i].set_exception(e)

    for n in range(threads):
        threading.Thread(target=work, name=f"mlxload-transfer-{n}", daemon=True).start()
