"""Shared test setup: no test may reach the network, and Hub libraries stay offline."""

from __future__ import annotations

import os

import pytest

# huggingface_hub reads these at import; tests that need a Hub use a stand-in on 127.0.0.1.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(params=["small read", "stream read"])
def copy_path(request, monkeypatch):
    """Run a test on each copy path: small tensors' (``pread`` + ``mx.array``) and the
    stream read the others take."""
    if request.param == "stream read":
        from mlxload import tensor_file

        monkeypatch.setattr(tensor_file, "_SMALL_READ_BYTES", -1)
        monkeypatch.setattr(tensor_file, "_SMALL_TENSOR_BYTES", -1)
    return request.param
