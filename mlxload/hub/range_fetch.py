"""Fetch parts of Hub shards with HTTP Range requests, for ranks that need only some bytes.

A tensor-parallel rank keeps about ``1/N`` of each split layer. Instead of downloading whole
shards, :class:`RangeFetch` gets each shard's header first, then just the byte ranges the
rank will read, into a sparse file of the shard's full size in a private temporary folder
(deleted by :meth:`RangeFetch.close`; nothing partial goes into the Hugging Face cache).

What is checked: every answer must be ``206`` with the exact ``Content-Range`` asked for and
the file size the Hub lists, and the header is validated as any other. The Hub lists one
hash per file, so bytes fetched as ranges can't be checked against it, except when the
ranges add up to the whole file: then its sha256 is compared, as for a download. Shards
already complete in the local Hub cache are read from there instead.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlxload.byte_ranges import ByteRanges, coalesce, split_long
from mlxload.fd_write import pwrite_all
from mlxload.free_space import check_free_space, human_bytes
from mlxload.header import MAX_HEADER_SIZE
from mlxload.hub.cache import COMMIT_RE, RepoCache, cache_root
from mlxload.hub.errors import (
    DownloadError,
    EntryNotFoundError,
    HubError,
    IntegrityError,
    OfflineError,
)
from mlxload.hub.listing import RemoteFile
from mlxload.hub.offline import offline_mode
from mlxload.hub.progress import ByteProgress, progress_enabled
from mlxload.hub.remote import Remote, translate
from mlxload.hub.stop import Cancelled, StopSignal, run_all
from mlxload.hub.transfer import (
    PROGRESS,
    READ_TIMEOUT_S,
    RETRIES,
    RETRY_STATUS,
    Pace,
    backoff_delay,
    hash_file,
    status_error,
)

__all__ = ["GAP", "HEADER_GUESS", "MAX_REQUEST", "RangeFetch"]

GAP = 1 << 20
"""Holes of up to this many bytes between wanted ranges are fetched too: one request fewer
costs more than a MiB on most links."""
MAX_REQUEST = 32 << 20
"""Longest range asked in one request (longer ones are split and fetched in parallel)."""
HEADER_GUESS = 128 << 10
"""Bytes asked for first from each shard: its header in one request for all but the largest
headers (a 7B model's shard header is some tens of KiB)."""
_PREFIX = "mlxload-ranges-"


class RangeFetch:
    """Shards of one Hub snapshot, fetched range by range into sparse local files.

    The files live in ``$TMPDIR/mlxload-ranges-<pid>-*``: sparse, so they take the space of
    what was fetched (on a tmpfs ``/tmp``, that much RAM until :meth:`close`). Folders left by
    processes that no longer run (killed mid-load) are removed when the next one starts.

    Args:
        snapshot: The snapshot folder :func:`mlxload.hub.download` returned for the repo's
            metadata (its name is the commit, and the cache holds the file listing).
        repo_id: ``org/name``.
        token, cache_dir, local_files_only: As for :func:`mlxload.hub.download`.
        workers: Requests in flight at once.
        progress: Show a progress bar (None: as huggingface_hub's bars).
        revision: Ignored: the snapshot's commit is fetched, whatever the branch says now.

    Attributes:
        fetched_bytes: Bytes received over the network so far.
        have: Local partial file -> the ranges it holds.
    """

    def __init__(
        self,
        snapshot: Path,
        repo_id: str,
        *,
        token: Any = None,
        cache_dir: str | os.PathLike | None = None,
        workers: int = 8,
        progress: bool | None = None,
        local_files_only: bool | None = None,
        revision: str | None = None,
    ) -> None:
        self.snapshot = Path(snapshot)
        self.commit = self.snapshot.name
        if not COMMIT_RE.match(self.commit):
            raise HubError(f"{snapshot}: not a Hub snapshot folder (its name is no commit hash)")
        self.repo_id = repo_id
        listing = RepoCache(cache_root(cache_dir), repo_id).read_manifest(self.commit) or []
        self.files: dict[str, RemoteFile] = {f.path: f for f in listing}
        self._token = token
        self._offline = local_files_only
        self._workers = max(1, workers)
        self._progress = progress
        self._dir: Path | None = None  # made on first need: nothing to clean up before
        self._local_names: dict[Path, str] = {}
        self.have: dict[Path, ByteRanges] = {}
        self._verified: set[Path] = set()  # whole shards checked against their hash
        self.fetched_bytes = 0
        self._count_lock = threading.Lock()
        self._remote: Remote | None = None

    # -- public ------------------------------------------------------------------------------
    def open_shards(self, names: Iterable[str]) -> dict[str, Path]:
        """A local path for each shard, holding at least its header.

        The cached file where the snapshot has it complete; else a sparse file of the listed
        size with its first ``8 + N`` bytes fetched (shards in parallel).

        Raises:
            OfflineError: offline mode, and a shard is not cached.
            DownloadError, IntegrityError, HubError: the Hub failed or sent something wrong.
        """
        out: dict[str, Path] = {}
        todo: dict[Path, RemoteFile] = {}
        for name in names:
            cached = self.snapshot.joinpath(*name.split("/"))
            if cached.is_file():
                out[name] = cached
                continue
            file = self._listed(name)
            local = self._workdir().joinpath(*name.split("/"))
            out[name] = local
            if local not in self.have:
                self._create(local, file)
                todo[local] = file
        try:
            # The first HEADER_GUESS bytes hold the header's length and, mostly, the header.
            self.fetch({local: [(0, min(HEADER_GUESS, f.size))] for local, f in todo.items()})
            rest = {}
            for local, file in todo.items():
                with open(local, "rb") as fh:
                    n = int.from_bytes(fh.read(8), "little")
                if n <= MAX_HEADER_SIZE and 8 + n <= file.size:  # else the reader says why
                    rest[local] = [(8, 8 + n)]
            self.fetch(rest)
        except BaseException:
            for local in todo:  # headerless files must not be handed out by a later call
                self.have.pop(local, None)
                local.unlink(missing_ok=True)
            raise
        return out

    def fetch(self, wanted: Mapping[Path, list[tuple[int, int]]]) -> None:
        """Make ``[start, end)`` ranges of shards from :meth:`open_shards` present.

        Nothing is fetched for cached shards. Holes of up to :data:`GAP` bytes between ranges
        are fetched along with them. A shard whose ranges add up to all of it is checked
        against the hash the Hub lists.

        Raises:
            DownloadError, IntegrityError, HubError: as :meth:`open_shards`.
        """
        jobs = []
        for local, ranges in wanted.items():
            if local in self.have:
                todo = self.have[local].missing(coalesce(ranges, gap=GAP))
                jobs += [(local, s, e) for s, e in split_long(todo, MAX_REQUEST)]
        if not jobs:
            self._verify_complete(wanted)
            return
        need = sum(e - s for _, s, e in jobs)
        check_free_space(
            self._workdir(),
            need,
            lambda free: DownloadError(
                f"hf://{self.repo_id}: {human_bytes(need)} of ranges to fetch but "
                f"{human_bytes(free)} free in {self._dir}; set TMPDIR to a larger disk"
            ),
        )
        if self._remote is None:
            self._remote = Remote(self.repo_id, token=self._token)
        bar = ByteProgress(
            total=need,
            desc=f"hf://{self.repo_id} (ranges)",
            enabled=progress_enabled(self._progress) and need > 64 << 20,
        )
        stop = StopSignal()
        try:
            run_all(
                [functools.partial(self._get, *job, bar.update, stop) for job in jobs],
                self._workers,
                stop,
            )
        finally:
            bar.close()
        self._verify_complete(wanted)

    def _verify_complete(self, wanted: Iterable[Path]) -> None:
        """Check each shard of ``wanted`` now whole (and not checked yet) against its hash.

        Ranges are recorded as they land, so a shard may have been completed by a fetch that
        failed elsewhere: it is checked on the next call that wants it, whatever that fetches.

        Raises:
            IntegrityError: a mismatch; the shard's ranges are forgotten, so a retry fetches
                them again.
        """
        for local in wanted:
            if local not in self.have or local in self._verified:
                continue
            file = self.files[self._local_names[local]]
            if self.have[local].covers(0, file.size):
                try:
                    _verify_whole(local, file)
                except BaseException:
                    self.have[local] = ByteRanges()
                    raise
                self._verified.add(local)

    def repo_path(self, local: Path) -> str | None:
        """The repository path of a partial file from :meth:`open_shards` (else None)."""
        return self._local_names.get(local)

    def close(self) -> None:
        """Delete the partial files (arrays already read from them keep their own memory)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self.have.clear()

    # -- internals ---------------------------------------------------------------------------
    def _workdir(self) -> Path:
        if self._dir is None:
            _sweep_dead_folders()
            try:
                self._dir = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
            except OSError as e:
                raise DownloadError(f"cannot make a folder for fetched ranges: {e}") from e
        return self._dir

    def _create(self, local: Path, file: RemoteFile) -> None:
        """An empty sparse file of the shard's size (only fetched ranges take space)."""
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            with open(local, "wb") as f:
                f.truncate(file.size)
        except OSError as e:
            raise DownloadError(f"{file.path}: cannot make {local} for its ranges: {e}") from e
        self._local_names[local] = file.path
        self.have[local] = ByteRanges()

    def _listed(self, name: str) -> RemoteFile:
        if self._offline or (self._offline is None and offline_mode()):
            why = "local_files_only=True" if self._offline else "HF_HUB_OFFLINE=1"
            raise OfflineError(
                f"hf://{self.repo_id}@{self.commit}: {name} is not in the local cache and "
                f"offline mode is on ({why}); fetching its ranges needs the Hub"
            )
        file = self.files.get(name)
        if file is None and self.files:
            raise EntryNotFoundError(
                f"hf://{self.repo_id}@{self.commit}: the repository has no {name} (named by "
                "its safetensors index)"
            )
        if file is None:
            raise HubError(
                f"hf://{self.repo_id}@{self.commit}: no listing of {name} in the cache; "
                "download the repository's metadata first (mlxload.hub.download)"
            )
        return file

    def _get(self, local: Path, start: int, end: int, on_bytes: Any, stop: StopSignal) -> None:
        """Write bytes ``[start, end)`` of a shard at the same offsets of its local file, and
        record them as fetched.

        The job opens the file itself: :func:`run_all` may return while a job still waits on
        the server, and a descriptor shared with the caller would be closed (and its number
        reused for another file) under it.

        Raises:
            Cancelled: ``stop`` was set (another range failed, or Ctrl-C).
        """
        fd = os.open(local, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            self._get_into(fd, local, start, end, on_bytes, stop)
        finally:
            os.close(fd)

    def _get_into(
        self, fd: int, local: Path, start: int, end: int, on_bytes: Any, stop: StopSignal
    ) -> None:
        import httpx2
        from huggingface_hub import get_session
        from huggingface_hub.utils import hf_raise_for_status

        file = self.files[self._local_names[local]]
        remote = self._remote
        url = remote.file_url(self.commit, file.path)
        timeout = httpx2.Timeout(READ_TIMEOUT_S, connect=10.0)
        pos, failures = start, 0
        while pos < end:
            if stop.is_set():
                raise Cancelled(file.path)
            asked = f"bytes {pos}-{end - 1}/{file.size}"
            headers = {
                **remote.headers(),
                "accept-encoding": "identity",
                "range": f"bytes={pos}-{end - 1}",
            }
            before = pos
            try:
                with get_session().stream("GET", url, headers=headers, timeout=timeout) as r:
                    if r.status_code in RETRY_STATUS:
                        r.read()
                        raise status_error(r)
                    if r.status_code >= 400:
                        r.read()
                        hf_raise_for_status(r)
                    _check_answer(file, r, asked, end - pos)
                    pace = Pace()
                    with stop.watching(r):
                        for chunk in r.iter_raw():
                            if stop.is_set():
                                raise Cancelled(file.path)
                            if pos + len(chunk) > end:
                                raise DownloadError(
                                    f"{file.path}: the server sent more than the "
                                    f"{end - start} bytes asked for at {start}"
                                )
                            _pwrite_all(fd, chunk, pos, file.path)
                            pos += len(chunk)
                            on_bytes(len(chunk))
                            pace.check(len(chunk), r.request)
                    if pos < end:
                        raise httpx2.RemoteProtocolError("the response ended early")
            except (HubError, Cancelled):
                raise
            except (httpx2.TransportError, httpx2.HTTPStatusError) as e:
                if stop.is_set():  # the stop shut the connection
                    raise Cancelled(file.path) from e
                if isinstance(e, httpx2.HTTPStatusError) and (
                    e.response.status_code not in RETRY_STATUS
                ):
                    raise self._describe(e, file) from e
                failures = 0 if pos - before >= min(PROGRESS, end - before) else failures + 1
                if failures > RETRIES:
                    raise DownloadError(
                        f"{file.path}: gave up on bytes {pos}-{end} after {RETRIES + 1} attempts "
                        f"in a row without progress: {self._describe(e, file)}"
                    ) from e
                if failures:
                    stop.wait(backoff_delay(failures))
            except Exception as e:  # huggingface_hub's HTTP errors, redirect loops, ...
                raise self._describe(e, file) from e
        self.have[local].add(start, end)  # as each range lands: a failure elsewhere keeps it
        with self._count_lock:
            self.fetched_bytes += end - start

    def _describe(self, e: BaseException, file: RemoteFile) -> HubError:
        return translate(
            e,
            repo_id=self.repo_id,
            revision=self.commit,
            filename=file.path,
            endpoint=self._remote.endpoint if self._remote else None,
        )


def _sweep_dead_folders() -> None:
    """Remove range folders of processes that are gone (a killed load leaves its own)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        pid = folder.name[len(_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # alive, someone else's: leave it
            continue


def _pwrite_all(fd: int, data: bytes, offset: int, name: str) -> None:
    """Write all of ``data``: a full disk makes ``pwrite`` write less without an error."""
    try:
        pwrite_all(fd, data, offset)
    except OSError as e:
        raise DownloadError(f"{name}: cannot write the fetched bytes: {e}") from e


def _check_answer(file: RemoteFile, response: Any, asked: str, length: int) -> None:
    """A range answer must be ``206`` for exactly the bytes asked, of the file size listed,
    unencoded (else its body is not the file's bytes)."""
    status = response.status_code
    content_range = response.headers.get("content-range", "")
    if status == 206 and content_range == asked:
        encoding = response.headers.get("content-encoding", "identity").lower()
        declared = response.headers.get("content-length")
        if encoding != "identity" or (declared is not None and declared != str(length)):
            raise DownloadError(
                f"{file.path}: the server answered {asked.partition('/')[0]!r} with "
                f"Content-Encoding {encoding!r} and Content-Length {declared}, not the "
                f"{length} plain bytes asked for; load with fetch='files'"
            )
        return
    if status == 206 and content_range.rpartition("/")[2] != str(file.size):
        raise IntegrityError(
            f"{file.path}: the server's file is not the {file.size} bytes the Hub lists "
            f"(Content-Range {content_range!r}); it may have changed upstream: run again",
            filename=file.path,
            expected=f"({file.size} bytes)",
            actual=content_range,
        )
    raise DownloadError(
        f"{file.path}: asked for {asked.partition('/')[0].replace(' ', '=', 1)}, the server "
        f"answered HTTP {status}"
        + (f" with Content-Range {content_range!r}" if content_range else " without a range")
        + "; it can't serve parts of files: load with fetch='files'"
    )


def _verify_whole(local: Path, file: RemoteFile) -> None:
    """Check a shard whose ranges add up to the whole file against the hash the Hub lists."""
    actual = hash_file(local, file)
    if actual != file.content_hash:
        raise IntegrityError(
            f"{file.path}: {file.hash_kind} mismatch after fetching every range of it: expected "
            f"{file.content_hash}, got {actual}; the bytes can't be trusted (run again)",
            filename=file.path,
            expected=file.content_hash,
            actual=actual,
        )
