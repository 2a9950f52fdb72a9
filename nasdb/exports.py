"""Lazy package exports: a package's public names, imported from their modules on first use.

A package ``__init__`` that imported its whole API at once would make ``nasdb --help`` import
torch and Ray, and would pre-import the modules run with ``python -m`` (``predictor.train``,
``cluster.populate``), which then warn. ``lazy_exports`` gives the package a module-level
``__getattr__`` and ``__dir__`` instead (PEP 562).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Iterable, Mapping


def lazy_exports(package: str, names: Mapping[str, Iterable[str]], modules: Iterable[str] = ()
                 ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``.

    ``names`` maps a module of the package to the public names it defines; ``modules`` lists the
    package's submodules that are public themselves (``from cluster import populate``). A name is
    imported on its first use and then kept in the package's namespace.
    """
    origin = {name: module for module, defined in names.items() for name in defined}
    submodules = set(modules)
    clash = sorted(origin.keys() & submodules)
    if clash:
        raise ValueError(f"a public name must not also name a public submodule, got {clash} in {package!r}")
    exported = sorted(origin.keys() | submodules)

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name not in origin:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(origin[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exported})

    return exported, __getattr__, __dir__
