"""A small stand-in for the Hugging Face Hub, for tests: stdlib only, 127.0.0.1, random port.

It serves what huggingface_hub and mlxload ask for:

- ``GET /api/models/{repo}[/revision/{rev}]`` -> ``{"id", "sha", "siblings"}``
- ``GET /api/models/{repo}/tree/{rev}?recursive=true`` -> entries with ``oid``, ``size``,
  ``lfs.oid`` (sha256)
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``,
  ``Content-Length``, ``X-Linked-Size``; ``Range`` -> ``206`` + ``Content-Range``

It logs every request and injects faults per file: cut a transfer after N bytes (closing the
connection), serve corrupted bytes, slow a transfer down, or answer an HTTP error. It answers
at most ``max_requests`` requests and shuts itself down after ``lifetime_s`` seconds.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["REVISION", "TREE", "FakeRepo", "Fault", "HubServer", "LoggedRequest", "hub_env"]

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".onnx", ".h5", ".msgpack")


def git_sha1(data: bytes) -> str:
    """Git's blob id of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


TREE = "@tree"
"""The ``path`` of faults for a repository's tree listing (``stall``, ``status``, ``slow`` and
``body`` apply)."""

REVISION = "@revision"
"""The ``path`` of faults for the commit lookup (``status`` and ``body`` apply)."""


@dataclass
class Fault:
    """Something going wrong with the next ``times`` GETs of one file.

    Attributes:
        kind: ``"cut"`` (close the connection after ``after`` bytes of the body), ``"corrupt"``
            (flip one byte), ``"slow"`` (send at ``rate`` bytes/s, in pieces of ``after`` bytes,
            16 KiB if 0), ``"status"`` (answer
            ``status`` with ``error_code`` in ``X-Error-Code``), ``"short"`` (serve the file
            without its last ``after`` bytes, as if the mirror's copy were truncated), or
            ``"gzip"`` (send the body gzip-compressed, with ``Content-Encoding: gzip``),
            ``"stall"`` (for :data:`TREE`: say nothing for ``rate`` seconds), ``"redirect"``
            (a 302 to ``location``, the request's own URL if empty: a loop), or ``"body"``
            (for :data:`TREE` and :data:`REVISION`: answer 200 with ``location`` as the body).
        times: How many requests it applies to; -1 for all of them.
        ignore_range: Answer a ranged request with 200 and the whole file.
        delay: Seconds to say nothing before answering a file request, whatever the kind.
    """

    kind: str
    after: int = 0
    rate: float = 0.0
    status: int = 500
    error_code: str | None = None
    times: int = 1
    ignore_range: bool = False
    location: str = ""
    delay: float = 0.0


@dataclass(frozen=True)
class LoggedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]

    @property
    def range_start(self) -> int | None:
        """The first byte asked for by a ``Range: bytes=N-`` header, if any."""
        value = self.headers.get("range")
        if not value or not value.startswith("bytes="):
            return None
        return int(value[6:].split("-", 1)[0])


@dataclass
class FakeRepo:
    """A model repository: files, one commit, refs, and access rules.

    Attributes:
        repo_id: ``org/name``.
        files: Path -> content. ``*.safetensors``/``*.bin``/... are LFS files.
        token: When set, requests must carry ``Authorization: Bearer <token>`` (else 401).
        gated: Answer 403 ``GatedRepo`` to everything.
    """

    repo_id: str
    files: dict[str, bytes]
    token: str | None = None
    gated: bool = False
    commit: str = ""
    refs: dict[str, str] = field(default_factory=dict)
    _digests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.commit:
            h = hashlib.sha1(self.repo_id.encode())
            for path in sorted(self.files):
                h.update(path.encode() + hashlib.sha256(self.files[path]).digest())
            self.commit = h.hexdigest()
        self.refs.setdefault("main", self.commit)

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def sha256(self, path: str) -> str:
        return self._digest(path, "sha256", lambda d: hashlib.sha256(d).hexdigest())

    def etag(self, path: str) -> str:
        return self.sha256(path) if self.is_lfs(path) else self._digest(path, "git", git_sha1)

    def _digest(self, path: str, kind: str, compute: Any) -> str:
        # Hashing a big file on every request would make the server, not the client, the
        # bottleneck of many-request transfers. Cached until the content is replaced.
        data = self.files[path]
        seen = self._digests.get((path, kind))
        if seen is None or seen[0] is not data:
            seen = (data, compute(data))
            self._digests[(path, kind)] = seen
        return seen[1]

    def tree_entry(self, path: str) -> dict[str, Any]:
        data = self.files[path]
        if not self.is_lfs(path):
            return {"type": "file", "path": path, "size": len(data), "oid": git_sha1(data)}
        pointer = (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256(path)}\n"
            f"size {len(data)}\n"
        ).encode()
        return {
            "type": "file",
            "path": path,
            "size": len(data),
            "oid": git_sha1(pointer),
            "lfs": {"oid": self.sha256(path), "size": len(data), "pointerSize": len(pointer)},
        }

    def resolve(self, rev: str) -> str | None:
        if rev == self.commit:
            return rev
        return self.refs.get(rev)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds a connection may sit idle
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def do_GET(self) -> None:
        self._handle(body=True)

    # -- helpers -------------------------------------------------------------------------
    def _send(
        self, status: int, payload: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _repo(self, org: str, name: str) -> FakeRepo | None:
        repo = self.server.owner.repos.get(f"{org}/{name}")
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.token is not None and self.headers.get("authorization") != f"Bearer {repo.token}":
            self._error(401, "RepoNotFound", "Invalid username or password.")
            return None
        if repo.gated:
            self._error(403, "GatedRepo", "Access to this model is restricted.")
            return None
        return repo

    # -- routing -------------------------------------------------------------------------
    def _handle(self, body: bool) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        headers = {k.lower(): v for k, v in self.headers.items()}
        owner.log(LoggedRequest(self.command, url.path, headers))
        if not owner.admit():
            self._error(503, None, "request budget exhausted")
            return
        try:
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(parts[2:], parse_qs(url.query))
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(parts[0], parts[1], parts[3], "/".join(parts[4:]), body)
            else:
                self._error(404, None, "no such route")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _api(self, parts: list[str], query: dict[str, list[str]]) -> None:
        repo = self._repo(parts[0], parts[1])
        if repo is None:
            return
        rest = parts[2:]
        if not rest or rest[0] == "revision":
            fault = self.server.owner.take_fault(repo.repo_id, REVISION)
            if self._api_fault(fault):
                return
            rev = rest[1] if len(rest) > 1 else "main"
            commit = repo.resolve(rev)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return
            siblings = [{"rfilename": p} for p in sorted(repo.files)]
            self._json(
                200,
                {
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "sha": commit,
                    "private": False,
                    "siblings": siblings,
                },
            )
        elif rest[0] == "tree" and len(rest) >= 2:
            fault = self.server.owner.take_fault(repo.repo_id, TREE)
            if fault is not None and fault.kind == "stall":
                time.sleep(fault.rate)  # say nothing for that long
            if self._api_fault(fault):
                return
            if repo.resolve(rest[1]) is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
                return
            doc = [repo.tree_entry(p) for p in sorted(repo.files)]
            if fault is not None and fault.kind == "slow":
                payload = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self._write_body(payload, fault)
                return
            self._json(200, doc)
        else:
            self._error(404, None, "no such route")

    def _api_fault(self, fault: Fault | None) -> bool:
        """Answer an API request as ``fault`` says (True), if it is one of its kinds."""
        if fault is not None and fault.kind == "status":
            # a Retry-After no client should honour in full
            self._send(fault.status, b"{}", {"Retry-After": "1000000000"})
            return True
        if fault is not None and fault.kind == "body":
            self._send(200, fault.location.encode(), {"Content-Type": "text/html"})
            return True
        return False

    def _resolve(self, org: str, name: str, rev: str, path: str, body: bool) -> None:
        repo = self._repo(org, name)
        if repo is None:
            return
        commit = repo.resolve(rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        if path not in repo.files:
            self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
            return
        data = repo.files[path]
        fault = self.server.owner.take_fault(repo.repo_id, path) if body else None
        if fault is not None and fault.delay:
            time.sleep(fault.delay)  # before anything is sent: headers included
        if fault is not None and fault.kind == "status":
            self._error(fault.status, fault.error_code, "injected fault")
            return
        if fault is not None and fault.kind == "redirect":
            self._send(302, b"", {"Location": fault.location or self.path})
            return
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{repo.etag(path)}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if repo.is_lfs(path):
            headers["X-Linked-Size"] = str(len(data))
            headers["X-Linked-Etag"] = f'"{repo.sha256(path)}"'
        if fault is not None and fault.kind == "short":
            data = data[: len(data) - fault.after]
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get("range")
        if fault is not None and fault.ignore_range:
            rng = None
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a)
            end = int(b) if b else len(data) - 1
            if start >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                self._send(416, b"", headers)
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        payload = data[start : end + 1]
        if fault is not None and fault.kind == "gzip":  # whatever the request asked for
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        if fault is not None and fault.kind == "corrupt" and payload:
            i = len(payload) // 2
            payload = payload[:i] + bytes([payload[i] ^ 0xFF]) + payload[i + 1 :]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not body:
            return
        with self.server.owner.sending():
            self._write_body(payload, fault)

    def _write_body(self, payload: bytes, fault: Fault | None) -> None:
        if fault is not None and fault.kind == "cut":
            self.wfile.write(payload[: fault.after])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "slow":
            step = fault.after or 16 * 1024
            for i in range(0, len(payload), step):
                piece = payload[i : i + step]
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(len(piece) / fault.rate)
            return
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HubServer


class HubServer:
    """The stand-in Hub. Use as a context manager; ``url`` is its endpoint."""

    def __init__(self, *repos: FakeRepo, max_requests: int = 2000, lifetime_s: float = 120.0):
        self.repos = {r.repo_id: r for r in repos}
        self.requests: list[LoggedRequest] = []
        self.max_requests = max_requests
        self._faults: dict[tuple[str, str], list[Fault]] = {}
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True
        self._stopped = False
        self._in_flight = 0
        self.max_in_flight = 0

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler ---------------------------------------------------------------
    @contextlib.contextmanager
    def sending(self):
        """Count file bodies being sent at once (``max_in_flight``)."""
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def log(self, request: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def admit(self) -> bool:
        with self._lock:
            return len(self.requests) <= self.max_requests

    def take_fault(self, repo_id: str, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get((repo_id, path))
            if not queue:
                return None
            fault = queue[0]
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    queue.pop(0)
            return fault

    # -- used by tests -----------------------------------------------------------------------
    def add_fault(self, repo_id: str, path: str, fault: Fault) -> None:
        """Queue ``fault`` for the next GETs of ``path`` in ``repo_id``."""
        with self._lock:
            self._faults.setdefault((repo_id, path), []).append(fault)

    def gets(self, path_suffix: str = "") -> list[LoggedRequest]:
        """The GET requests of files under ``resolve/`` whose path ends with ``path_suffix``."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(path_suffix)
            ]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()


def hub_env(monkeypatch: Any, server: HubServer | None, home: Any) -> dict[str, str]:
    """Point huggingface_hub (already imported or not) at ``server`` and a cache under ``home``.

    Patches ``huggingface_hub.constants`` (read at import) and the environment (for
    subprocesses), disables telemetry, Xet and progress bars, hides any real token, and closes
    huggingface_hub's pooled connections so nothing reaches a previous server.

    Returns:
        The environment variables set (to pass to subprocesses).
    """
    import huggingface_hub
    from huggingface_hub import constants

    endpoint = server.url if server is not None else "http://127.0.0.1:9"
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_OFFLINE": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    huggingface_hub.close_session()
    return env
