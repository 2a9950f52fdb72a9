"""Each package's ``__init__`` is its contract (issue 13): every name in ``__all__`` resolves,
``dir()`` lists it, and the lazy ``__getattr__`` keeps ``import nasdb, cluster, predictor`` light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from nasdb.exports import lazy_exports
from test_layering import PACKAGES, ROOT, module_name

PACKAGE_INITS = sorted(module_name(p) for package in PACKAGES for p in (ROOT / package).rglob("__init__.py"))
HEAVY = ("torch", "ray", "duckdb", "pyarrow", "pandas", "sklearn")


@pytest.mark.parametrize("package", PACKAGE_INITS)
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__doc__, f"{package} has no docstring"
    assert module.__all__, f"{package} exports nothing"
    for name in module.__all__:
        value = getattr(module, name)
        owner = getattr(value, "__module__", None) or getattr(value, "__name__", "")
        top = owner.split(".")[0]
        assert top not in PACKAGES or top == package.split(".")[0] or top == "nasdb", (package, name, owner)
        assert name in dir(module)


def test_importing_the_top_packages_imports_nothing_heavy():
    code = ("import sys, nasdb, cluster, predictor; dir(cluster); "
            f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.strip() == "HEAVY []", out.stdout + out.stderr


def test_lazy_exports_contract():
    __all__, getattr_, dir_ = lazy_exports("nasdb", {"nasdb.space": ["default_space"]}, modules=["checks"])
    assert __all__ == ["checks", "default_space"]
    assert getattr_("checks").__name__ == "nasdb.checks"
    assert callable(getattr_("default_space"))
    with pytest.raises(AttributeError, match="'nasdb' has no attribute 'nope'"):
        getattr_("nope")
    with pytest.raises(ValueError, match="must not also name a public submodule"):
        lazy_exports("nasdb", {"nasdb.export_optuna": ["export_optuna"]}, modules=["export_optuna"])
