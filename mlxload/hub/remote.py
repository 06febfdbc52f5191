"""Talk to the Hub through huggingface_hub: commit resolution, tree listing, auth headers, errors.

Every failure leaves this module as an :class:`mlxload.hub.errors.HubError` (see
:func:`translate`). huggingface_hub is imported only when these functions run.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from mlxload._version import __version__
from mlxload.hub.cache import COMMIT_RE
from mlxload.hub.errors import (
    AuthError,
    DownloadError,
    EntryNotFoundError,
    GatedRepoError,
    HubError,
    OfflineError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from mlxload.hub.listing import RemoteFile

__all__ = ["Remote", "is_connection_error", "translate"]

LOGIN_HINT = "run `hf auth login` or set the HF_TOKEN environment variable"


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _download_server(exc: BaseException, endpoint: str | None) -> str | None:
    """The host of the download server (CDN) ``exc``'s file request was redirected to, if it
    was (see :func:`~mlxload.hub.transfer.is_download_server`)."""
    from mlxload.hub.transfer import is_download_server

    response = getattr(exc, "response", None)
    request = getattr(response, "request", None) if response is not None else None
    if request is None:
        try:
            request = getattr(exc, "request", None)  # httpx raises if it has none
        except RuntimeError:
            request = None
    url = getattr(request, "url", None)
    if url is None or endpoint is None or not is_download_server(url, endpoint):
        return None
    return str(url.host)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the Hub could not be reached (as opposed to a refusal)."""
    import httpx2

    if isinstance(exc, httpx2.TransportError):
        return True
    status = _status(exc)  # a rate limit counts: the cached copy may stand in meanwhile
    return status is not None and (status >= 500 or status == 429)


def translate(
    exc: BaseException,
    *,
    repo_id: str,
    revision: str | None = None,
    filename: str | None = None,
    endpoint: str | None = None,
) -> HubError:
    """Turn a huggingface_hub / httpx2 / OS exception into the matching :class:`HubError`.

    Args:
        exc: The exception raised while talking to the Hub.
        repo_id: The repository concerned.
        revision: The revision asked for, if any.
        filename: The file being fetched, if any.
        endpoint: The Hub endpoint, for messages about connectivity.

    Returns:
        The error to raise (``raise translate(e, ...) from e``).
    """
    if isinstance(exc, HubError):
        return exc
    import httpx2
    from huggingface_hub import errors as hf

    where = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    status = _status(exc)
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return OfflineError(f"{where}: offline mode is on (HF_HUB_OFFLINE) and {exc}")
    if isinstance(exc, hf.LocalTokenNotFoundError):
        return AuthError(f"{where}: a token is required but none is configured: {LOGIN_HINT}")
    if isinstance(exc, hf.GatedRepoError):
        return GatedRepoError(
            f"{where} is a gated repository and this account has no access: accept its terms on "
            f"the model page, then {LOGIN_HINT} with a token of that account"
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return RevisionNotFoundError(
            f"{where}: revision {revision or 'main'!r} does not exist (check the branch, tag or "
            "commit hash)"
        )
    if isinstance(exc, hf.RemoteEntryNotFoundError) or (
        filename is not None and status == 404 and not isinstance(exc, hf.RepositoryNotFoundError)
    ):
        return EntryNotFoundError(f"{where}: file {filename or '?'!r} is not on the Hub (404)")
    cdn = _download_server(exc, endpoint) if filename else None  # only file GETs redirect there
    target = f" {filename!r}" if filename else ""
    if status in (401, 403) and cdn is not None:
        return DownloadError(
            f"{where}: the download server {cdn} refused{target} ({status}): its signed link "
            "may have expired; run the same command again (finished files are kept)"
        )
    if status in (401, 403):
        what = "is private, gated, or does not exist" if status == 401 else "refused access"
        return AuthError(
            f"{where}: the Hub answered {status}{' for' + target if target else ''} (the "
            f"repository {what}); {LOGIN_HINT}"
        )
    if isinstance(exc, hf.RepositoryNotFoundError) or status == 404:
        return RepoNotFoundError(
            f"{where}: repository not found on {endpoint or 'the Hub'} (check the name; for a "
            f"private repository, {LOGIN_HINT})"
        )
    if isinstance(exc, httpx2.TooManyRedirects):
        return DownloadError(
            f"{where}: the answers for{target or ' the request'} redirect in a loop; check "
            "HF_ENDPOINT and any proxy, then run the same command again"
        )
    if isinstance(exc, httpx2.TransportError):
        server = f"the download server {cdn}" if cdn else (endpoint or "the Hub")
        check = "the network" if cdn else "the network or HF_ENDPOINT"
        return DownloadError(
            f"{where}: could not download{target} from {server}: "
            f"{type(exc).__name__}: {exc or 'connection failed'}. Check {check} "
            "and run the same command again: finished files are kept and an interrupted one "
            "resumes where it stopped (or set HF_HUB_OFFLINE=1 to use only cached files)"
        )
    if status is not None:
        target = f" for {filename!r}" if filename else ""
        kept = " (finished files are kept, interrupted ones resume)" if filename else ""
        return DownloadError(
            f"{where}: {f'the download server {cdn}' if cdn else 'the Hub'} answered HTTP "
            f"{status}{target}; try again later{kept}"
        )
    return HubError(f"{where}: {type(exc).__name__}: {exc}")


RESOLVE_TIMEOUT_S = 10.0
RESOLVE_RETRIES = 2
"""The commit lookup's read timeout and retries: when the Hub can't answer, a cached
snapshot stands in, so it is not waited for as long as a file download."""


def _api_json(body: bytes, url: str, kind: type) -> Any:
    """The JSON ``kind`` (dict or list) of an API answer; anything else is no Hub answer."""
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if not isinstance(value, kind):
        raise HubError(
            f"{url}: the answer is not the Hub API's JSON (got {body[:60]!r}); check "
            "HF_ENDPOINT and any proxy or captive portal"
        )
    return value


def _file_entry(entry: Any, url: str) -> dict:
    """A tree listing's file entry, checked: a path and a size the download can trust."""
    ok = (
        isinstance(entry, dict)
        and isinstance(entry.get("path"), str)
        and type(entry.get("size")) is int
        and entry["size"] >= 0
    )
    if not ok:
        raise HubError(
            f"{url}: a tree listing entry without a valid path and size ({str(entry)[:120]}); "
            "this is not the Hub's API (check HF_ENDPOINT)"
        )
    return entry


MAX_LISTING_PAGE = 256 << 20
"""Largest tree-listing page read (the Hub's pages hold 1,000 entries, well under 1 MiB)."""


def _read_capped(response: Any, pace: Any) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        pace.check(len(chunk), response.request)
        if len(body) > MAX_LISTING_PAGE:
            raise HubError(
                f"{response.request.url}: a tree listing page over {MAX_LISTING_PAGE >> 20} MiB; "
                "this is not the Hub's API (check HF_ENDPOINT)"
            )
    return bytes(body)


class Remote:
    """One repository on one Hub endpoint, with the caller's token.

    Attributes:
        repo_id: ``org/name``.
        endpoint: Base URL of the Hub (``HF_ENDPOINT`` at the time of the call by default).
        token: As huggingface_hub takes it: a string, True (must exist), False (never send),
            or None (use the saved token / ``HF_TOKEN`` if any).
    """

    def __init__(self, repo_id: str, *, endpoint: str | None = None, token: Any = None) -> None:
        from huggingface_hub import constants

        self.repo_id = repo_id
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.token = token
        self._headers: dict[str, str] | None = None

    def _api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(
            endpoint=self.endpoint,
            token=self.token,
            library_name="mlxload",
            library_version=__version__,
        )

    def headers(self) -> dict[str, str]:
        """Request headers: user agent and, when a token is in use, ``authorization``."""
        if self._headers is None:
            from huggingface_hub.utils import build_hf_headers

            try:
                self._headers = build_hf_headers(
                    token=self.token, library_name="mlxload", library_version=__version__
                )
            except Exception as e:
                raise translate(e, repo_id=self.repo_id, endpoint=self.endpoint) from e
        return self._headers

    def resolve_commit(self, revision: str) -> str:
        """The commit hash ``revision`` points at now.

        Asked directly, as the tree listing is, rather than through ``HfApi.model_info``: that
        waits for a trickling answer without limit (minutes) and gives up on the first 429 or
        503. Here a busy answer is retried (:data:`RESOLVE_RETRIES` times: an unreachable Hub
        should soon let a cached copy stand in) and a slow one ends at the minimum pace.

        Raises:
            HubError: (subclass) repository/revision missing, no access, or Hub unreachable.
        """
        url = f"{self.endpoint}/api/models/{self.repo_id}/revision/{quote(revision, safe='')}"
        try:
            _, body = self._get_with_retries(
                url, None, read_timeout=RESOLVE_TIMEOUT_S, retries=RESOLVE_RETRIES
            )
            info = _api_json(body, url, dict)
        except Exception as e:
            raise translate(
                e, repo_id=self.repo_id, revision=revision, endpoint=self.endpoint
            ) from e
        sha = info.get("sha")
        if not isinstance(sha, str) or not COMMIT_RE.match(sha):
            raise HubError(
                f"hf://{self.repo_id}@{revision}: the Hub did not return a commit hash "
                f"(got {sha!r}); check HF_ENDPOINT and any proxy"
            )
        return sha

    def list_files(self, commit: str) -> list[RemoteFile]:
        """Every file of the repository at ``commit`` (recursive tree listing, page by page).

        Requested here rather than through ``HfApi.list_repo_tree``, which waits without a
        timeout (a server that stalls hangs it for ever) and sleeps as long as a
        ``Retry-After`` says (10**9 s, say): each page gets the file downloads' read timeout
        and retries, with their capped backoff.

        Raises:
            HubError: (subclass) as :meth:`resolve_commit`.
        """
        from huggingface_hub.hf_api import RepoFile

        url: str | None = f"{self.endpoint}/api/models/{self.repo_id}/tree/{quote(commit, safe='')}"
        params: dict | None = {"recursive": True, "expand": False}
        entries: list[dict] = []
        listing = url
        try:
            while url is not None:
                response, body = self._get_with_retries(url, params)
                entries += _api_json(body, url, list)
                url, params = response.links.get("next", {}).get("url"), None
            return [
                RemoteFile.from_hf(RepoFile(**_file_entry(e, listing)))
                for e in entries
                if not isinstance(e, dict) or e.get("type") == "file"
            ]
        except Exception as e:
            raise translate(e, repo_id=self.repo_id, revision=commit, endpoint=self.endpoint) from e

    def _get_with_retries(
        self,
        url: str,
        params: dict | None,
        *,
        read_timeout: float | None = None,
        retries: int | None = None,
    ) -> tuple[Any, bytes]:
        """A GET with a read timeout and a minimum pace (a trickle of a byte a second never
        trips a read timeout), retried on transport errors and busy statuses (by default
        with the file downloads' timeout and retries).

        Returns:
            ``(response, body)``; the body at most :data:`MAX_LISTING_PAGE` bytes.
        """
        import time

        import httpx2
        from huggingface_hub.utils import get_session, hf_raise_for_status

        from mlxload.hub.transfer import (
            READ_TIMEOUT_S,
            RETRIES,
            RETRY_STATUS,
            Pace,
            backoff_delay,
            status_error,
        )

        timeout = httpx2.Timeout(read_timeout or READ_TIMEOUT_S, connect=10.0)
        retries = RETRIES if retries is None else retries
        failures = 0
        while True:
            try:
                with get_session().stream(
                    "GET", url, params=params, headers=self.headers(), timeout=timeout
                ) as response:
                    if response.status_code in RETRY_STATUS:
                        response.read()
                        error: Exception = status_error(response)
                    else:
                        if response.status_code >= 400:
                            response.read()
                            hf_raise_for_status(response)
                        return response, _read_capped(response, Pace())
            except httpx2.TransportError as e:
                error = e
            failures += 1
            if failures > retries:
                raise error
            time.sleep(backoff_delay(failures))

    def file_url(self, commit: str, path: str) -> str:
        """The ``resolve`` URL of a file at a commit."""
        return f"{self.endpoint}/{self.repo_id}/resolve/{commit}/{quote(path)}"
