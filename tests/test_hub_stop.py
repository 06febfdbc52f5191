"""StopSignal: setting it wakes reads blocked on the connections it watches, and only those."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from mlxload.hub.stop import Cancelled, StopSignal, run_all


class _Stream:
    def __init__(self, sock):
        self._sock = sock

    def get_extra_info(self, info):
        return self._sock if info == "socket" else None


class _Response:
    """What StopSignal reads of an httpx response: its socket and whether it is closed."""

    def __init__(self, sock, closed=False):
        self.extensions = {"network_stream": _Stream(sock)}
        self.is_closed = closed


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _blocked_read(sock) -> threading.Event:
    """Start a read no data will come to; the event is set when it ends."""
    ended = threading.Event()
    threading.Thread(target=lambda: (sock.recv(1), ended.set()), daemon=True).start()
    time.sleep(0.1)
    return ended


def test_set_wakes_a_read_blocked_on_a_watched_connection(pair):
    ours, _ = pair
    stop = StopSignal()
    with stop.watching(_Response(ours)):
        ended = _blocked_read(ours)
        assert not ended.is_set()
        stop.set()
        assert ended.wait(5)


def test_a_connection_watched_after_set_is_shut_at_once(pair):
    ours, _ = pair
    stop = StopSignal()
    stop.set()
    with stop.watching(_Response(ours)):
        assert ours.recv(1) == b""  # shut: no wait


def test_a_finished_response_leaves_its_pooled_connection_alone(pair):
    """A response read to its end has handed its connection back to the pool, where another
    request may be using it: set() must not cut that one."""
    ours, theirs = pair
    stop = StopSignal()
    with stop.watching(_Response(ours, closed=True)):
        stop.set()
    theirs.sendall(b"x")
    assert ours.recv(1) == b"x"


def test_a_connection_no_longer_watched_is_left_alone(pair):
    ours, theirs = pair
    stop = StopSignal()
    with stop.watching(_Response(ours)):
        pass
    stop.set()
    theirs.sendall(b"x")
    assert ours.recv(1) == b"x"


def test_run_all_raises_the_real_failure_not_the_cancellations():
    stop = StopSignal()

    def fails():
        time.sleep(0.2)
        raise ValueError("the real one")

    def waits():
        if stop.wait(10):
            raise Cancelled("waits")

    started = time.monotonic()
    with pytest.raises(ValueError, match="the real one"):
        run_all([waits, fails, waits], 3, stop)
    assert stop.is_set() and time.monotonic() - started < 5


def test_run_all_returns_results_in_order_and_counts_them():
    counts = []
    got = run_all([lambda i=i: i * i for i in range(7)], 3, StopSignal(), counts.append)
    assert got == [i * i for i in range(7)]
    assert counts[-1] == 7 and counts == sorted(counts)
    assert run_all([], 3, StopSignal()) == []


def _second_thread_start_fails(monkeypatch, exc: BaseException) -> None:
    """The second worker's start() raises after the thread is running: a Ctrl-C landing in
    start()'s wait for the thread, or "can't start new thread" under a thread limit."""
    real = threading.Thread.start
    started: list[str] = []

    def start(self):
        if self.name.startswith("mlxload-transfer"):
            started.append(self.name)
            if len(started) == 2:
                real(self)
                raise exc
        return real(self)

    monkeypatch.setattr(threading.Thread, "start", start)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("can't start new thread")])
def test_a_failure_while_starting_the_threads_stops_those_started(monkeypatch, exc):
    """They ran every job, unwatched, after run_all had raised (a range fetch then wrote
    shard bytes through descriptors its caller had closed and the process reused)."""
    _second_thread_start_fails(monkeypatch, exc)
    stop = StopSignal()
    ran: list[int] = []

    def job(i: int) -> None:
        time.sleep(0.2)
        if stop.is_set():
            raise Cancelled()
        ran.append(i)

    with pytest.raises(type(exc)):
        run_all([lambda i=i: job(i) for i in range(6)], 4, stop)
    time.sleep(0.5)
    assert stop.is_set() and ran == []
