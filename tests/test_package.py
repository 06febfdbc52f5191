"""Package hygiene: every export resolves, importing is side-effect free and cheap."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import mlxload


def test_every_public_name_resolves():
    for name in mlxload.__all__:
        assert getattr(mlxload, name) is not None, name


def test_every_module_declares_all():
    for info in pkgutil.walk_packages(mlxload.__path__, "mlxload."):
        if info.name == "mlxload.__main__":
            continue
        module = importlib.import_module(info.name)
        assert isinstance(getattr(module, "__all__", None), list), info.name


def test_import_pulls_in_no_heavy_optional_modules():
    code = (
        "import sys, mlxload\n"
        "heavy = [m for m in ('huggingface_hub', 'mlx_lm', 'transformers', 'numpy') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_share_one_base():
    for name in mlxload.errors.__all__:
        assert issubclass(getattr(mlxload, name), mlxload.MlxloadError), name
