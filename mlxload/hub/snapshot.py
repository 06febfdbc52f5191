"""``mlxload.hub.download``: a model snapshot from the Hub into the standard HF cache.

huggingface_hub supplies repository info, the tree listing, auth headers, the HTTP session
and the cache location; mlxload does the transfers itself so they run in parallel, resume
after a crash, and are checked against the hashes the Hub lists.
"""

from __future__ import annotations

import functools
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlxload.free_space import check_free_space, human_bytes
from mlxload.hub.cache import COMMIT_RE, RepoCache, cache_root
from mlxload.hub.errors import DownloadError, EntryNotFoundError, HubError, HubSpecError
from mlxload.hub.listing import RemoteFile
from mlxload.hub.offline import cached_snapshot, offline_mode
from mlxload.hub.progress import ByteProgress, progress_enabled
from mlxload.hub.remote import Remote, is_connection_error, translate
from mlxload.hub.select import default_selection, index_files, select_files
from mlxload.hub.spec import DEFAULT_REVISION, HubSpec, check_revision, parse_spec
from mlxload.hub.stop import Cancelled, StopSignal, run_all
from mlxload.hub.transfer import READ_TIMEOUT_S, fetch_blob
from mlxload.user_frame import caller_outside_mlxload

__all__ = ["download"]

LOCK_NOTICE_S = 10.0  # how often a wait for another process's download is reported


def _spec(repo: str | HubSpec, revision: str | None) -> HubSpec:
    spec = repo if isinstance(repo, HubSpec) else parse_spec(repo)
    if revision is not None:
        check_revision(revision, f"hf://{spec.repo_id}")
    if revision is not None and spec.revision is not None and revision != spec.revision:
        raise HubSpecError(
            f"{repo!s} names revision {spec.revision!r} but another, {revision!r}, was also "
            "given (--revision / revision=): give one"
        )
    return HubSpec(spec.repo_id, revision or spec.revision)


def _patterns(allow_patterns: str | Sequence[str] | None) -> list[str] | None:
    if allow_patterns is None:
        return None
    return [allow_patterns] if isinstance(allow_patterns, str) else list(allow_patterns)


class _Job:
    """Everything the worker threads of one download share."""

    def __init__(self, remote: Remote, cache: RepoCache, commit: str, bar: ByteProgress) -> None:
        import huggingface_hub

        self.remote = remote
        self.cache = cache
        self.commit = commit
        self.bar = bar
        self.session = huggingface_hub.get_session()
        self.headers = remote.headers()
        self.stop = StopSignal()

    def present(self, f: RemoteFile) -> bool:
        return self.cache.holds(self.commit, f)

    def fetch(self, f: RemoteFile) -> None:
        """Make ``f`` present in the snapshot (download unless its blob is already cached)."""
        import filelock

        blob = self.cache.blob(f.blob_name)
        lock_path = self.cache.lock(f.blob_name)
        try:
            blob.parent.mkdir(parents=True, exist_ok=True)
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            lock_path.touch(exist_ok=True)  # filelock's own error names only the lock's hash
        except OSError as e:
            raise _unwritable(self.cache, f"{f.path} is not in the cache", e) from e
        lock = filelock.FileLock(str(lock_path))
        waited, said = 0.0, 0.0
        while True:  # another process may be fetching the same blob: wait, but stay cancellable
            if self.stop.is_set():
                raise Cancelled(f.path)
            try:
                lock.acquire(timeout=0.5)
                break
            except filelock.Timeout:
                waited += 0.5
            if waited - said >= LOCK_NOTICE_S:  # say so, or a stuck peer looks like a hang
                said = waited
                print(
                    f"mlxload: waiting {waited:.0f} s for {_holder(lock_path)} downloading "
                    f"{f.path} (lock {lock_path}); it goes on when that one finishes or exits",
                    file=sys.stderr,
                    flush=True,
                )
        with _HOLDERS_LOCK:
            _HOLDERS[lock_path] = self.stop
        try:
            if blob.is_file() and blob.stat().st_size == f.size:
                self.bar.update(f.size)
            else:
                fetch_blob(
                    session=self.session,
                    url=self.remote.file_url(self.commit, f.path),
                    headers=self.headers,
                    file=f,
                    blob=blob,
                    partial=self.cache.partial(f.blob_name),
                    on_bytes=self.bar.update,
                    stop=self.stop,
                    describe=lambda e: translate(
                        e,
                        repo_id=self.remote.repo_id,
                        revision=self.commit,
                        filename=f.path,
                        endpoint=self.remote.endpoint,
                    ),
                )
            self.cache.link(self.commit, f.path, f.blob_name)
        finally:
            with _HOLDERS_LOCK:
                _HOLDERS.pop(lock_path, None)
            lock.release()

    def fetch_all(self, files: Sequence[RemoteFile], workers: int) -> None:
        """Fetch ``files`` with ``workers`` threads; the first failure cancels the rest."""
        todo = sorted(files, key=lambda f: -f.size)  # big shards first: best overlap
        run_all(
            [functools.partial(self.fetch, f) for f in todo],
            workers,
            self.stop,
            on_finished=lambda done: self.bar.file_done(done, len(todo)),
        )


_HOLDERS: dict[Path, StopSignal] = {}
"""Blob locks held in this process, with the stop of the download holding each."""
_HOLDERS_LOCK = threading.Lock()


def _holder(lock_path: Path) -> str:
    """Who holds a blob lock, for the waiting message."""
    with _HOLDERS_LOCK:
        stop = _HOLDERS.get(lock_path)
    if stop is None:
        return "another process"
    if stop.is_set():  # run_all returned without it: see mlxload.hub.stop
        return (
            "an interrupted download in this process (still waiting for the server's first "
            f"answer; at most {READ_TIMEOUT_S:.0f} s)"
        )
    return "another download in this process"


def _unwritable(cache: RepoCache, what: str, e: OSError) -> DownloadError:
    return DownloadError(
        f"hf://{cache.repo_id}: {what} and the cache {cache.root} can't be written "
        f"({e.strerror}: {e.filename}); set HF_HUB_CACHE (or --cache-dir) to a writable "
        "directory, or use only "
        "what is cached (--offline / HF_HUB_OFFLINE=1)"
    )


def _check_space(cache: RepoCache, files: Sequence[RemoteFile]) -> None:
    """Refuse a download the disk can't hold, counting what interrupted ones already have
    (a rerun after a full disk needs room for the rest only)."""
    need = sum(max(0, f.size - _partial_size(cache, f)) for f in files)
    blobs = cache.storage / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    check_free_space(
        blobs,
        need,
        lambda free: DownloadError(
            f"hf://{cache.repo_id}: {human_bytes(need)} to download but only "
            f"{human_bytes(free)} free in {cache.root} ({human_bytes(need - free)} short); "
            "free some space or set HF_HUB_CACHE (or --cache-dir) to a larger disk"
        ),
    )


def _partial_size(cache: RepoCache, file: RemoteFile) -> int:
    try:
        return cache.partial(file.blob_name).stat().st_size
    except OSError:
        return 0


def _online(
    remote: Remote,
    cache: RepoCache,
    revision: str,
    commit: str,
    patterns: list[str] | None,
    workers: int,
    bar_enabled: bool,
) -> Path:
    files = cache.read_manifest(commit) or remote.list_files(commit)
    snapshot = cache.snapshot(commit)
    try:
        snapshot.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(cache, f"commit {commit[:12]} ({revision}) is not in the cache", e) from e
    cache.write_ref(revision, commit)
    cache.write_manifest(commit, files)
    bar = ByteProgress(total=0, desc=f"hf://{remote.repo_id}", enabled=bar_enabled)
    try:
        job = _Job(remote, cache, commit, bar)
        if patterns is None:
            indexes = index_files(files)
            first = [f for f in indexes if not job.present(f)]
            bar.add_total(sum(f.size for f in first))
            job.fetch_all(first, workers)
            chosen = default_selection(files, snapshot)
            if not any(f.path.endswith(".safetensors") for f in chosen):
                names = ", ".join(f.path for f in files[:10]) or "(none)"
                raise EntryNotFoundError(
                    f"hf://{remote.repo_id}@{revision} has no safetensors weights "
                    f"(files: {names}); "
                    "mlxload reads safetensors only: convert the weights to safetensors, or "
                    "use a repository that has them (to download other files anyway: "
                    f"mlxload download {remote.repo_id} --include PATTERN)"
                )
        else:
            chosen = select_files(files, allow_patterns=patterns)
            if not chosen:
                raise EntryNotFoundError(
                    f"hf://{remote.repo_id}@{revision}: no file matches {', '.join(patterns)}"
                )
        todo = [f for f in chosen if not job.present(f)]
        _check_space(cache, [f for f in todo if not cache.blob(f.blob_name).is_file()])
        bar.add_total(sum(f.size for f in todo))
        job.fetch_all(todo, workers)
    finally:
        bar.close()
    return snapshot


def download(
    repo: str | HubSpec,
    revision: str | None = None,
    *,
    allow_patterns: str | Sequence[str] | None = None,
    workers: int = 8,
    progress: bool | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """Download what loading a model needs into the HF cache and return its snapshot dir.

    Files already cached are not fetched again; a file interrupted earlier (even by a killed
    process) resumes where it stopped; every file is checked against the hash the Hub lists
    before it appears in the snapshot.

    Args:
        repo: ``"org/name"``, ``"hf://org/name[@revision]"`` or a :class:`HubSpec`.
        revision: Branch, tag or commit (default: the spec's, else ``main``).
        allow_patterns: Glob(s) of the files to fetch instead of the default selection
            (safetensors weights the index names, root ``*.json``, tokenizer files).
        workers: Files downloaded at once.
        progress: Show a progress bar; None follows ``HF_HUB_DISABLE_PROGRESS_BARS``.
        token: Hub token; None uses ``HF_TOKEN`` / the saved login, False sends none.
        cache_dir: Hub cache directory; None uses ``HF_HUB_CACHE`` (``$HF_HOME/hub``).
        local_files_only: Use only the cache (no network request at all); None follows
            ``HF_HUB_OFFLINE``.

    Returns:
        ``<cache>/models--org--name/snapshots/<commit>``.

    Raises:
        HubSpecError: ``repo`` is malformed.
        OfflineError: Offline (or the Hub unreachable) and something is not cached; names it.
        RepoNotFoundError, RevisionNotFoundError, EntryNotFoundError, AuthError,
            GatedRepoError: What the Hub answered.
        DownloadError: Transfers failed after retries (running again resumes them).
        IntegrityError: A file's bytes do not match the Hub's hash.
    """
    spec = _spec(repo, revision)
    rev = spec.revision or DEFAULT_REVISION
    patterns = _patterns(allow_patterns)
    cache = RepoCache(cache_root(cache_dir), spec.repo_id)
    if local_files_only:
        return cached_snapshot(cache, rev, patterns, "--offline (local_files_only=True) was given")
    if local_files_only is None and offline_mode():
        return cached_snapshot(cache, rev, patterns, "offline mode is on (HF_HUB_OFFLINE=1)")
    remote = Remote(spec.repo_id, token=token)
    try:
        try:
            commit = rev if COMMIT_RE.match(rev) else remote.resolve_commit(rev)
        except HubError as e:
            # The Hub is unreachable: the snapshot this branch was last seen at still does,
            # but it may be out of date, and that is said.
            snapshot = _cached_instead(cache, rev, patterns, e)
            cause = str(e).split("; ")[0].split(". ")[0]  # the cause, not what to do about it
            warnings.warn(
                f"hf://{spec.repo_id}@{rev}: the Hub is unreachable ({cause}); using the "
                f"cached snapshot {snapshot.name[:12]}, which may be out of date",
                stacklevel=caller_outside_mlxload(),
            )
            return snapshot
        try:
            return _online(
                remote, cache, rev, commit, patterns, workers, progress_enabled(progress)
            )
        except HubError as e:
            # The Hub said where the branch is now: only that commit's own snapshot may stand
            # in, never an older one.
            return _cached_instead(cache, commit, patterns, e)
    except HubError:
        raise
    except Exception as e:  # anything huggingface_hub raised that was not yet translated
        raise translate(e, repo_id=spec.repo_id, revision=rev, endpoint=remote.endpoint) from e


def _cached_instead(
    cache: RepoCache, revision: str, patterns: list[str] | None, error: HubError
) -> Path:
    """The complete cached snapshot of ``revision`` when ``error`` is the Hub being
    unreachable; else (or without such a snapshot) ``error`` is raised."""
    cause: Any = error.__cause__
    if cause is None or not is_connection_error(cause):
        raise error
    try:
        return cached_snapshot(cache, revision, patterns, f"the Hub is unreachable ({error})")
    except HubError:
        raise error from cause
