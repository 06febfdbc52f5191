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

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlxload.byte_ranges import ByteRanges, coalesce, split_long
from mlxload.header import MAX_HEADER_SIZE
from mlxload.hub.cache import COMMIT_RE, RepoCache, default_cache_dir
from mlxload.hub.errors import DownloadError, HubError, IntegrityError, OfflineError
from mlxload.hub.listing import RemoteFile
from mlxload.hub.offline import offline_mode
from mlxload.hub.progress import ByteProgress, progress_enabled
from mlxload.hub.remote import Remote, translate
from mlxload.hub.transfer import BACKOFF_S, READ_TIMEOUT_S, RETRIES, new_hasher

__all__ = ["GAP", "MAX_REQUEST", "RangeFetch"]

GAP = 1 << 20
"""Holes of up to this many bytes between wanted ranges are fetched too: one request fewer
costs more than a MiB on most links."""
MAX_REQUEST = 32 << 20
"""Longest range asked in one request (longer ones are split and fetched in parallel)."""
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RangeFetch:
    """Shards of one Hub snapshot, fetched range by range into sparse local files.

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
        root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        cache = RepoCache(root, repo_id)
        listing = cache.read_manifest(self.commit) or []
        self.files: dict[str, RemoteFile] = {f.path: f for f in listing}
        self._token = token
        self._offline = local_files_only
        self._workers = max(1, workers)
        self._progress = progress
        self._dir = Path(tempfile.mkdtemp(prefix="mlxload-ranges-"))
        self.have: dict[Path, ByteRanges] = {}
        self.fetched_bytes = 0
        self._remote: Remote | None = None

    # -- public ------------------------------------------------------------------------------
    def open_shard(self, name: str) -> Path:
        """A local path for shard ``name`` holding at least its header.

        The cached file when the snapshot has it complete; else a sparse file of the listed
        size with its first ``8 + N`` bytes fetched.

        Raises:
            OfflineError: offline mode, and the shard is not cached.
            DownloadError, IntegrityError, HubError: the Hub failed or sent something wrong.
        """
        cached = self.snapshot.joinpath(*name.split("/"))
        if cached.is_file():
            return cached
        file = self._listed(name)
        local = self._dir.joinpath(*name.split("/"))
        if local in self.have:
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "wb") as f:
            f.truncate(file.size)  # sparse: only fetched ranges take disk space
        self.have[local] = ByteRanges()
        self._fetch(name, local, [(0, min(8, file.size))])
        with open(local, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        if n <= MAX_HEADER_SIZE and 8 + n <= file.size:  # else the reader names the problem
            self._fetch(name, local, [(8, 8 + n)])
        return local

    def fetch(self, local: Path, ranges: list[tuple[int, int]]) -> None:
        """Make ``[start, end)`` ``ranges`` of a shard from :meth:`open_shard` present.

        Nothing is fetched for a cached shard. Holes of up to :data:`GAP` bytes between
        ranges are fetched along with them.

        Raises:
            DownloadError, IntegrityError, HubError: as :meth:`open_shard`.
        """
        if local not in self.have:
            return  # a complete file from the cache
        name = local.relative_to(self._dir).as_posix()
        self._fetch(name, local, ranges)

    def close(self) -> None:
        """Delete the partial files (arrays already read from them keep their own memory)."""
        shutil.rmtree(self._dir, ignore_errors=True)
        self.have.clear()

    # -- internals ---------------------------------------------------------------------------
    def _listed(self, name: str) -> RemoteFile:
        if self._offline or (self._offline is None and offline_mode()):
            why = "local_files_only=True" if self._offline else "HF_HUB_OFFLINE=1"
            raise OfflineError(
                f"hf://{self.repo_id}@{self.commit}: {name} is not in the local cache and "
                f"offline mode is on ({why}); fetching its ranges needs the Hub"
            )
        file = self.files.get(name)
        if file is None:
            raise HubError(
                f"hf://{self.repo_id}@{self.commit}: no listing of {name} in the cache; "
                "download the repository's metadata first (mlxload.hub.download)"
            )
        return file

    def _fetch(self, name: str, local: Path, ranges: list[tuple[int, int]]) -> None:
        file = self.files[name]
        have = self.have[local]
        todo = split_long(have.missing(coalesce(ranges, gap=GAP)), MAX_REQUEST)
        if not todo:
            return
        if self._remote is None:
            self._remote = Remote(self.repo_id, token=self._token)
        bar = ByteProgress(
            total=sum(e - s for s, e in todo),
            desc=f"hf://{self.repo_id} {name} (ranges)",
            enabled=progress_enabled(self._progress) and len(todo) > 2,
        )
        fd = os.open(local, os.O_WRONLY)
        try:
            with ThreadPoolExecutor(max_workers=min(self._workers, len(todo))) as pool:
                for start, end in pool.map(
                    lambda r: self._get(file, fd, r[0], r[1], bar.update), todo
                ):
                    have.add(start, end)
        finally:
            os.close(fd)
            bar.close()
        self.fetched_bytes += sum(e - s for s, e in todo)
        if have.covers(0, file.size):
            _verify_whole(local, file)

    def _get(self, file: RemoteFile, fd: int, start: int, end: int, on_bytes: Any) -> tuple:
        """Write bytes ``[start, end)`` of ``file`` at the same offsets of ``fd``."""
        import httpx2
        from huggingface_hub import get_session
        from huggingface_hub.utils import hf_raise_for_status

        remote = self._remote
        url = remote.file_url(self.commit, file.path)
        timeout = httpx2.Timeout(READ_TIMEOUT_S, connect=10.0)
        pos, failures = start, 0
        while pos < end:
            asked = f"bytes {pos}-{end - 1}/{file.size}"
            headers = {
                **remote.headers(),
                "accept-encoding": "identity",
                "range": f"bytes={pos}-{end - 1}",
            }
            before = pos
            try:
                with get_session().stream("GET", url, headers=headers, timeout=timeout) as r:
                    if r.status_code in _RETRY_STATUS:
                        r.read()
                        raise httpx2.HTTPStatusError(
                            f"HTTP {r.status_code}", request=r.request, response=r
                        )
                    if r.status_code >= 400:
                        r.read()
                        hf_raise_for_status(r)
                    _check_answer(file, r.status_code, r.headers.get("content-range", ""), asked)
                    for chunk in r.iter_raw():
                        if pos + len(chunk) > end:
                            raise DownloadError(
                                f"{file.path}: the server sent more than the {end - start} "
                                f"bytes asked for at {start}"
                            )
                        os.pwrite(fd, chunk, pos)
                        pos += len(chunk)
                        on_bytes(len(chunk))
                    if pos < end:
                        raise httpx2.RemoteProtocolError("the response ended early")
            except (httpx2.TransportError, httpx2.StreamError, httpx2.HTTPStatusError) as e:
                if isinstance(e, httpx2.HTTPStatusError) and (
                    e.response.status_code not in _RETRY_STATUS
                ):
                    raise self._describe(e, file) from e
                failures = 0 if pos > before else failures + 1
                if failures > RETRIES:
                    raise DownloadError(
                        f"{file.path}: gave up on bytes {pos}-{end} after {RETRIES + 1} attempts "
                        f"in a row without progress: {self._describe(e, file)}"
                    ) from e
                if failures:
                    time.sleep(min(BACKOFF_S * 2 ** (failures - 1), 8.0))
            except HubError:
                raise
            except OSError as e:
                if getattr(e, "response", None) is not None:
                    raise self._describe(e, file) from e  # huggingface_hub's HTTP errors
                raise DownloadError(f"{file.path}: cannot write the fetched bytes: {e}") from e
        return start, end

    def _describe(self, e: BaseException, file: RemoteFile) -> HubError:
        return translate(
            e,
            repo_id=self.repo_id,
            revision=self.commit,
            filename=file.path,
            endpoint=self._remote.endpoint if self._remote else None,
        )


def _check_answer(file: RemoteFile, status: int, content_range: str, asked: str) -> None:
    """A range answer must be ``206`` for exactly the bytes asked, of the file size listed."""
    if status == 206 and content_range == asked:
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
    hasher = new_hasher(file)
    with open(local, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            hasher.update(chunk)
    expected = file.sha256 if file.is_lfs else file.blob_id
    actual = hasher.hexdigest()
    if actual != expected:
        kind = "sha256" if file.is_lfs else "git sha1"
        raise IntegrityError(
            f"{file.path}: {kind} mismatch after fetching every range of it: expected "
            f"{expected}, got {actual}; the bytes can't be trusted (run again)",
            filename=file.path,
            expected=str(expected),
            actual=actual,
        )
