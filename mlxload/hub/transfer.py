"""Fetch one file into the cache: resumable, hashed while written, renamed into place if good.

Bytes accumulate in ``blobs/<name>.mlxload-partial``. A later run (after a crash, a kill, or
a dropped connection) re-hashes the bytes already there and asks the server for the rest with
``Range: bytes=<n>-``. The hash (sha256 for LFS files, git blob sha1 for plain files) is
computed as bytes arrive, and the partial file becomes ``blobs/<name>`` by an atomic rename
only when size and hash match; on mismatch it is deleted and :class:`IntegrityError` raised.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from mlxload.hub.errors import DownloadError, HubError, IntegrityError
from mlxload.hub.listing import RemoteFile
from mlxload.hub.stop import Cancelled, StopSignal

__all__ = [
    "BACKOFF_S",
    "CHUNK",
    "PROGRESS",
    "RETRIES",
    "RETRY_STATUS",
    "Cancelled",
    "Pace",
    "backoff_delay",
    "fetch_blob",
    "hash_file",
    "new_hasher",
    "status_error",
]

CHUNK = 1 << 20  # bytes per write (each one reaches the file: a kill loses at most one chunk)
RETRIES = 5  # consecutive failed attempts (no byte received) before giving up
BACKOFF_S = 0.5  # first retry delay, doubled each time, capped at 8 s
READ_TIMEOUT_S = 30.0
PROGRESS = 64 << 10
"""Bytes an attempt must bring (or the rest of the file) to count as progress: a link that
drops after every few bytes must run out of retries, not resume for ever (one that drops
every few hundred KiB still finishes)."""
SLOW_WINDOW_S = 60.0
MIN_RATE = 1024
"""Bytes/s an attempt must average over each :data:`SLOW_WINDOW_S` (a trickle of a byte a
second never trips the read timeout); slower, it counts as a failed attempt."""
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth asking again (timeouts, rate limits, server errors)."""


def new_hasher(file: RemoteFile) -> Any:
    """The hash object that checks ``file``: sha256 for LFS, git's ``blob <size>\\0`` sha1 else."""
    if file.is_lfs:
        return hashlib.sha256()
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % file.size)
    return h


def backoff_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row: doubling, capped at 8."""
    return min(BACKOFF_S * 2 ** (failures - 1), 8.0)


def hash_file(path: Path, file: RemoteFile) -> str:
    """The hex digest of ``path``'s first ``file.size`` bytes, of ``file``'s hash kind."""
    hasher = new_hasher(file)
    _hash_prefix(path, hasher, file.size)
    return hasher.hexdigest()


def _hash_prefix(path: Path, hasher: Any, size: int, stop: StopSignal | None = None) -> None:
    with open(path, "rb") as f:
        remaining = size
        while remaining:
            if stop is not None and stop.is_set():  # a multi-GB partial takes seconds
                raise Cancelled(str(path))
            chunk = f.read(min(CHUNK * 8, remaining))
            if not chunk:
                raise OSError(f"{path} shrank while being read")
            hasher.update(chunk)
            remaining -= len(chunk)


def is_download_server(final: Any, asked: str) -> bool:
    """Whether a file request ended at the Hub's download server (a CDN with signed links):
    another host, and not the Hub's own ``/resolve/`` API under another name (an alias or a
    proxy, where a 401/403 is a real refusal)."""
    import httpx2

    final = httpx2.URL(str(final))
    return final.host != httpx2.URL(asked).host and "/resolve/" not in final.path


class Pace:
    """Ends an attempt whose bytes come slower than :data:`MIN_RATE` over a window."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._bytes = 0

    def check(self, n: int, request: Any) -> None:
        import httpx2

        self._bytes += n
        elapsed = time.monotonic() - self._start
        if elapsed >= SLOW_WINDOW_S:
            if self._bytes < MIN_RATE * elapsed:
                raise httpx2.ReadTimeout(
                    f"{self._bytes} bytes in {elapsed:.0f} s, under {MIN_RATE} bytes/s",
                    request=request,
                )
            self._start, self._bytes = time.monotonic(), 0


class _Sink:
    """Appends body bytes to the partial file in ~CHUNK writes, hashing them as they go."""

    def __init__(
        self, path: Path, hasher: Any, on_bytes: Callable[[int], None], *, limit: int
    ) -> None:
        self._out = open(path, "ab", buffering=0)  # noqa: SIM115  (closed in close())
        self._hasher = hasher
        self._on_bytes = on_bytes
        self._limit = limit
        self._buf = bytearray()
        self.written = 0
        self.overflow = False

    def add(self, chunk: bytes) -> None:
        if self.overflow:
            return
        if self.written + len(self._buf) + len(chunk) > self._limit:
            self.overflow = True
            self._buf.clear()
            return
        self._buf += chunk
        if len(self._buf) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._write_all(self._buf)
            self._hasher.update(self._buf)
            self.written += len(self._buf)
            self._on_bytes(len(self._buf))
            self._buf.clear()

    def _write_all(self, data: bytearray) -> None:
        """Every byte of ``data``, or none: a write may be short (a disk filling up), and
        bytes on disk that were never hashed would pass the final check as the wrong file."""
        fd = self._out.fileno()
        start = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                n = self._out.write(view)
                if not n:
                    raise OSError(errno.ENOSPC, "no byte written (disk full?)")
                view = view[n:]
        except BaseException:
            os.ftruncate(fd, start)  # back to what is hashed: a resume continues from there
            raise
        finally:
            view.release()

    def close(self) -> int:
        """Write what is buffered, close the file, and return the bytes written."""
        try:
            self._flush()
        finally:
            self._out.close()
        return self.written


def status_error(response: Any) -> Exception:
    """The ``httpx2.HTTPStatusError`` of an answer with an error status."""
    import httpx2

    return httpx2.HTTPStatusError(
        f"HTTP {response.status_code}", request=response.request, response=response
    )


def _start_offset(response: Any, asked: int) -> int:
    """Where the body of ``response`` starts in the file (0 for a full 200 answer)."""
    if response.status_code == 200:
        return 0
    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    if response.status_code != 206 or match is None:
        return -1
    return int(match.group(1)) if int(match.group(1)) == asked else -1


def _served_size(response: Any) -> int | None:
    """The whole file's size as the server states it (``Content-Range`` total of a 206, or
    ``Content-Length`` of an uncompressed 200), or None when it doesn't say."""
    if response.status_code == 206:
        total = response.headers.get("content-range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length", "")
    if (
        response.status_code == 200
        and length.isdigit()
        and not response.headers.get("content-encoding")
    ):
        return int(length)
    return None


def fetch_blob(
    *,
    session: Any,
    url: str,
    headers: dict[str, str],
    file: RemoteFile,
    blob: Path,
    partial: Path,
    on_bytes: Callable[[int], None] = lambda n: None,
    stop: StopSignal | None = None,
    describe: Callable[[BaseException], HubError] | None = None,
) -> Path:
    """Download ``file`` from ``url`` into ``blob``, resuming from ``partial`` if present.

    Args:
        session: An ``httpx2.Client`` (huggingface_hub's shared session).
        url: The file's ``resolve`` URL.
        headers: Auth and user-agent headers.
        file: Expected size and hash.
        blob: Final path (written only by an atomic rename of verified bytes).
        partial: Where received bytes accumulate.
        on_bytes: Called with the count of bytes newly accounted for (including the prefix
            already on disk, once at start; negative when a prefix had to be discarded).
        stop: When set by another thread, stop at once (a read waiting for bytes is woken)
            and raise :class:`Cancelled`.
        describe: Maps a transport/HTTP exception to the :class:`HubError` to raise.

    Returns:
        ``blob``.

    Raises:
        IntegrityError: Size or hash differs from the listing (nothing left under either name).
        DownloadError: Retries exhausted; the partial file is kept for the next run.
        HubError: What ``describe`` makes of an HTTP error (404, 401, ...).
    """
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    expected = file.content_hash
    hasher = new_hasher(file)
    have = partial.stat().st_size if partial.exists() else 0
    if have > file.size:
        partial.unlink()
        have = 0
    if have:
        _hash_prefix(partial, hasher, have, stop)
        on_bytes(have)
    timeout = httpx2.Timeout(READ_TIMEOUT_S, connect=10.0)
    failures = 0
    # Progress is bytes past the furthest point any attempt reached: a server that can't
    # resume (no Range support, 416) makes every retry start from 0, and those re-downloads
    # must count as failures, or a flaky connection would loop for ever.
    furthest = have

    def fail(e: BaseException) -> None:
        nonlocal failures
        failures += 1
        if failures > RETRIES:
            err = describe(e) if describe else DownloadError(str(e))
            kept = (
                f"{have} of {file.size} bytes kept in {partial.name}; running again resumes"
                if have
                else "nothing received was kept"
            )
            raise DownloadError(
                f"{file.path}: gave up after {RETRIES + 1} attempts in a row without progress "
                f"({kept}). {err}"
            ) from e
        delay = backoff_delay(failures)
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)

    def restart() -> None:
        nonlocal hasher, have
        partial.unlink(missing_ok=True)
        on_bytes(-have)
        hasher, have = new_hasher(file), 0

    while have < file.size:
        if stop is not None and stop.is_set():
            raise Cancelled(file.path)
        req_headers = {**headers, "accept-encoding": "identity"}  # byte offsets = file offsets
        if have:
            req_headers["range"] = f"bytes={have}-"
        before = have
        try:
            with session.stream("GET", url, headers=req_headers, timeout=timeout) as response:
                status = response.status_code
                if status == 416 or (status < 400 and _start_offset(response, have) < 0):
                    restart()  # the server cannot continue from here: start the file again
                    fail(DownloadError(f"{file.path}: HTTP {status} to a resumed request"))
                    continue
                if status >= 400:
                    response.read()
                    # A download server's 401/403 (an expired signed link): the Hub hands out
                    # a fresh one to the next request.
                    redirected = is_download_server(response.url, url)
                    if status in RETRY_STATUS or (redirected and status in (401, 403)):
                        fail(status_error(response))
                        continue
                    hf_raise_for_status(response)
                encoding = response.headers.get("content-encoding", "").strip().lower()
                if encoding not in ("", "identity"):  # its bytes aren't the file's
                    raise DownloadError(
                        f"{file.path}: the server sent it encoded ({encoding}) though asked for "
                        "the plain bytes; nothing of that answer was kept. A proxy may be "
                        "recompressing downloads: check HTTPS_PROXY / HF_ENDPOINT"
                    )
                served = _served_size(response)
                if served is not None and served != file.size:
                    restart()  # delete the partial, take its bytes back from the progress
                    raise IntegrityError(
                        f"{file.path}: the server's file is {served} bytes but the Hub lists "
                        f"{file.size}; the download was deleted (the file may have changed "
                        "upstream: run again, or report a broken mirror)",
                        filename=file.path,
                        expected=str(expected),
                        actual=f"({served} bytes)",
                    )
                if status == 200 and have:
                    restart()  # the server ignored Range: the whole body follows
                    before = 0
                sink = _Sink(partial, hasher, on_bytes, limit=file.size - have)
                pace = Pace()
                watching = stop.watching(response) if stop is not None else nullcontext()
                try:  # whatever arrived before a drop is kept: the next request resumes there
                    with watching:
                        for chunk in response.iter_raw():
                            if stop is not None and stop.is_set():
                                raise Cancelled(file.path)
                            sink.add(chunk)
                            pace.check(len(chunk), response.request)
                finally:
                    have += sink.close()
                if sink.overflow:
                    raise _discarded(
                        partial,
                        file,
                        f"the server sent more than the {file.size} bytes the Hub lists; the "
                        "download was deleted",
                        "(longer than listed)",
                    )
                if have < file.size:
                    raise httpx2.RemoteProtocolError("the response ended early")
        except (httpx2.TransportError, httpx2.StreamError) as e:
            if stop is not None and stop.is_set():  # the stop shut the connection
                raise Cancelled(file.path) from e
            base = max(before, furthest)
            furthest = max(furthest, have)
            if have - base >= min(PROGRESS, file.size - base) > 0:
                failures = 0  # progress was made: resume at once; only failures in a row count
                continue
            fail(e)
        except (HubError, Cancelled):
            raise
        except OSError as e:
            if getattr(e, "response", None) is not None and describe is not None:
                raise describe(e) from e  # huggingface_hub's HTTP errors are OSErrors
            raise DownloadError(f"{file.path}: cannot write {partial}: {e}") from e
        except Exception as e:
            if describe is None:
                raise
            raise describe(e) from e
    actual = hasher.hexdigest()
    if actual != expected:
        raise _discarded(
            partial,
            file,
            f"{file.hash_kind} mismatch: expected {expected}, got {actual}; the downloaded "
            "bytes were deleted (run again to download the file afresh)",
            actual,
        )
    if not partial.exists():  # zero-byte file
        partial.touch()
    on_disk = partial.stat().st_size
    if on_disk != file.size:  # what was hashed must be what is on disk
        raise _discarded(
            partial,
            file,
            f"the downloaded file is {on_disk} bytes on disk, not the {file.size} listed; it "
            "was deleted (run again to download it afresh)",
            "(wrong size on disk)",
        )
    os.replace(partial, blob)
    return blob


def _discarded(partial: Path, file: RemoteFile, problem: str, actual: str) -> IntegrityError:
    """Delete a download that can't be the listed file; the error to raise about it."""
    partial.unlink(missing_ok=True)
    return IntegrityError(
        f"{file.path}: {problem}",
        filename=file.path,
        expected=str(file.content_hash),
        actual=actual,
    )
