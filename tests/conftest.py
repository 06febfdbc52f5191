"""Shared test setup: no test may reach the network, and Hub libraries stay offline."""

from __future__ import annotations

import os

# huggingface_hub reads these at import; tests that need a Hub use a stand-in on 127.0.0.1.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
