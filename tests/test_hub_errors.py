"""Hub failures become mlxload errors that say what to do; no raw httpx2 exception escapes."""

from __future__ import annotations

import huggingface_hub
import pytest
from hub_fixtures import REPO, hub, make_repo, serve  # noqa: F401  (fixture)
from hub_server import Fault

from mlxload.errors import MlxloadError
from mlxload.hub import (
    AuthError,
    DownloadError,
    EntryNotFoundError,
    GatedRepoError,
    HubError,
    IntegrityError,
    RepoNotFoundError,
    RevisionNotFoundError,
    download,
)
from mlxload.hub import transfer as transfer_mod


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(transfer_mod, "BACKOFF_S", 0.01)


def test_missing_repo(hub):  # noqa: F811
    with pytest.raises(RepoNotFoundError) as e:
        download("acme/nope", progress=False)
    assert "hf://acme/nope@main: repository not found" in str(e.value)
    assert "hf auth login" in str(e.value)
    assert isinstance(e.value, MlxloadError)


def test_missing_revision(hub):  # noqa: F811
    with pytest.raises(RevisionNotFoundError, match="revision 'v9' does not exist"):
        download(f"hf://{REPO}@v9", progress=False)


def test_missing_file_on_the_hub(hub):  # noqa: F811
    server, _, _ = hub
    server.add_fault(REPO, "config.json", Fault("status", status=404, error_code="EntryNotFound"))
    with pytest.raises(EntryNotFoundError, match=r"file 'config\.json' is not on the Hub \(404\)"):
        download(REPO, progress=False)


def test_private_repo_needs_token(tmp_path, monkeypatch):
    repo = make_repo(tmp_path, "acme/private", token="hf_secret")
    server, _ = serve(monkeypatch, tmp_path, repo)
    try:
        with pytest.raises(AuthError) as e:
            download("acme/private", progress=False)
        msg = str(e.value)
        assert "answered 401" in msg
        assert "run `hf auth login` or set the HF_TOKEN environment variable" in msg
        assert not isinstance(e.value, GatedRepoError)

        monkeypatch.setenv("HF_TOKEN", "hf_secret")  # honoured as huggingface_hub does
        path = download("acme/private", progress=False)
        assert (path / "config.json").read_bytes() == repo.files["config.json"]
        assert all(r.headers.get("authorization") == "Bearer hf_secret" for r in server.gets())

        monkeypatch.delenv("HF_TOKEN")
        server.clear_log()
        download("acme/private", token="hf_secret", progress=False)  # explicit token
        assert server.requests[0].headers["authorization"] == "Bearer hf_secret"
    finally:
        server.stop()
        huggingface_hub.close_session()


def test_gated_repo(tmp_path, monkeypatch):
    server, _ = serve(monkeypatch, tmp_path, make_repo(tmp_path, "acme/gated", gated=True))
    try:
        with pytest.raises(GatedRepoError, match=r"gated repository.*hf auth login"):
            download("acme/gated", progress=False)
    finally:
        server.stop()
        huggingface_hub.close_session()


def test_persistent_server_error_is_a_download_error(hub):  # noqa: F811
    server, _, _ = hub
    shard = "model-00002-of-00003.safetensors"
    server.add_fault(REPO, shard, Fault("status", status=503, times=-1))
    with pytest.raises(DownloadError) as e:
        download(REPO, progress=False)
    assert "HTTP 503" in str(e.value) and shard in str(e.value)
    assert len(server.gets(shard)) == transfer_mod.RETRIES + 1


def test_server_that_cannot_resume_and_keeps_dropping_gives_up(hub):  # noqa: F811
    """Each retry starts from byte 0 again: re-downloading what was already had is no
    progress, so the retries run out instead of looping for ever."""
    server, _, _ = hub
    shard = "model-00001-of-00003.safetensors"
    server.add_fault(REPO, shard, Fault("cut", after=5000, times=-1, ignore_range=True))
    with pytest.raises(DownloadError, match="gave up after 6 attempts in a row without progress"):
        download(REPO, progress=False)
    assert len(server.gets(shard)) == transfer_mod.RETRIES + 1  # 5000 bytes: no progress


def test_mirror_copy_shorter_than_listed_is_an_integrity_error(hub):  # noqa: F811
    server, repo, _ = hub
    shard = "model-00002-of-00003.safetensors"
    server.add_fault(REPO, shard, Fault("short", after=100, times=-1))
    with pytest.raises(IntegrityError) as e:
        download(REPO, progress=False)
    size = len(repo.files[shard])
    assert f"the server's file is {size - 100} bytes but the Hub lists {size}" in str(e.value)
    assert len(server.gets(shard)) == 1


def test_unreachable_hub_is_a_download_error(tmp_path, monkeypatch):
    from hub_server import hub_env

    hub_env(monkeypatch, None, tmp_path / "hf")  # port 9 on 127.0.0.1: connection refused
    with pytest.raises(DownloadError) as e:
        download(REPO, progress=False)
    msg = str(e.value)
    assert "could not download" in msg and "127.0.0.1:9" in msg
    assert "run the same command again" in msg
    assert type(e.value.__cause__).__module__.startswith("httpx2")  # kept as the cause only


def test_errors_share_a_base():
    for cls in (RepoNotFoundError, RevisionNotFoundError, EntryNotFoundError, AuthError):
        assert issubclass(cls, HubError) and issubclass(cls, MlxloadError)
    assert issubclass(GatedRepoError, AuthError)


def test_rejected_resume_takes_its_prefix_back_from_the_progress(tmp_path):
    """The served-size check deletes a resumed prefix; the progress bar must lose it too."""
    import contextlib
    import hashlib

    from mlxload.hub.listing import RemoteFile

    body = b"x" * 1000
    file = RemoteFile("model.safetensors", 1000, "0" * 40, hashlib.sha256(body).hexdigest())
    partial = tmp_path / "blob.incomplete"
    partial.write_bytes(body[:400])

    class Response:
        status_code = 206

        def __init__(self):
            self.headers = {"content-range": "bytes 400-1199/1200", "content-length": "800"}

        def iter_raw(self):
            yield b"y" * 800

    class Session:
        @contextlib.contextmanager
        def stream(self, *args, **kwargs):
            yield Response()

    events: list[int] = []
    with pytest.raises(IntegrityError, match="the server's file is 1200 bytes but the Hub"):
        transfer_mod.fetch_blob(
            session=Session(), url="http://x", headers={}, file=file,
            blob=tmp_path / "blob", partial=partial, on_bytes=events.append,
        )  # fmt: skip
    assert events == [400, -400]
    assert not partial.exists() and not (tmp_path / "blob").exists()


def _download_server_that_refuses(seen: list) -> tuple:
    """A stand-in for the Hub's download servers (where files redirect) answering 403, as for
    an expired signed link; on 127.0.0.2, another host than the Hub's."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refuse(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.path)
            body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.2", 0), Refuse)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.2:{server.server_address[1]}/blob?sig=x"


@pytest.mark.parametrize("where", ["loop", "download-server-403"])
def test_redirects_that_fail_say_where_and_what_to_do(hub, monkeypatch, where):  # noqa: F811
    """A download server's 403 said 'run hf auth login' (wrong for a signed link that expired,
    and it wasn't retried); a redirect loop was a bare TooManyRedirects."""
    server, _, _ = hub
    shard = "model-00001-of-00003.safetensors"
    monkeypatch.setattr(transfer_mod, "BACKOFF_S", 0.01)
    seen: list = []
    location = ""
    if where != "loop":
        cdn, location = _download_server_that_refuses(seen)
    server.add_fault(REPO, shard, Fault("redirect", location=location, times=-1))
    try:
        with pytest.raises(DownloadError) as e:
            download(REPO, progress=False, workers=1)
    finally:
        if where != "loop":
            cdn.shutdown()
    if where == "loop":
        assert f"the answers for {shard!r} redirect in a loop; check HF_ENDPOINT" in str(e.value)
    else:
        assert (
            f"the download server 127.0.0.2 refused {shard!r} (403): its signed link may have "
            "expired; run the same command again"
        ) in str(e.value)
        assert len(seen) == transfer_mod.RETRIES + 1  # a fresh link is asked for each time


def test_a_repo_without_safetensors_weights_says_what_to_do(tmp_path, monkeypatch):
    from hub_server import FakeRepo

    repo = FakeRepo("acme/binonly", {"config.json": b"{}", "pytorch_model.bin": b"\x80\x04"})
    server, _ = serve(monkeypatch, tmp_path, repo)
    try:
        with pytest.raises(EntryNotFoundError) as e:
            download("acme/binonly", progress=False)
    finally:
        server.stop()
    assert str(e.value) == (
        "hf://acme/binonly@main has no safetensors weights (files: config.json, "
        "pytorch_model.bin); mlxload reads safetensors only: convert the weights to "
        "safetensors, or use a repository that has them (to download other files anyway: "
        "mlxload download acme/binonly --include PATTERN)"
    )
