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


# Exceptions that never leave mlxload, so need neither the common base nor a top-level name.
_INTERNAL_EXCEPTIONS = {
    "mlxload.hub.stop.Cancelled",  # tells transfer threads to stop; caught inside mlxload.hub
}


def _public_exceptions() -> list[type[Exception]]:
    """Every public Exception subclass defined in an mlxload module (not re-exported ones)."""
    found = []
    for info in pkgutil.walk_packages(mlxload.__path__, "mlxload."):
        if info.name == "mlxload.__main__":
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError as e:  # a module for an optional extra that isn't installed
            if (e.name or "").split(".")[0] != "mlx_lm":
                raise
            continue
        for name, value in vars(module).items():
            if (
                not name.startswith("_")
                and isinstance(value, type)
                and issubclass(value, Exception)
                and value.__module__ == info.name
                and f"{info.name}.{name}" not in _INTERNAL_EXCEPTIONS
            ):
                found.append(value)
    return found


def test_every_public_exception_is_an_mlxload_error_reachable_from_the_top():
    """``except mlxload.MlxloadError`` catches it, and ``except mlxload.<Name>`` can name it."""
    classes = _public_exceptions()
    assert len(classes) > 50  # the walk found the error modules
    not_ours = [c.__qualname__ for c in classes if not issubclass(c, mlxload.MlxloadError)]
    assert not_ours == []
    unreachable = [
        f"{c.__module__}.{c.__name__}"
        for c in classes
        if getattr(mlxload, c.__name__, None) is not c or c.__name__ not in mlxload.__all__
    ]
    assert unreachable == []
