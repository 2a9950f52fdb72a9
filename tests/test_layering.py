"""The package structure, checked on every module's imports, those inside functions included.

Three rules (README, Layout), with no exemption by file name:

1. Imports run one way, down the flow: nasdb -> cluster -> predictor / search. The CLI
   (``nasdb/cli/``) is the one face that sees every wing.
2. No module imports another package's ``_private`` module: each package and subpackage is
   used through its ``__init__`` (``__all__``).
3. Only the CLI imports the CLI: a CLI module is one under ``nasdb/cli/``, a ``cli.py`` or
   ``*_cli.py`` of a package, a ``__main__.py``, or the ``if __name__ == "__main__":`` block of a
   script module (what ``python -m predictor.train`` runs).

And the modules import each other without a cycle. The tests and benchmarks, outside every
package, use the exports too: they import no ``_private`` module at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package -> the project packages it may import (besides itself)
ALLOWED = {
    "nasdb": set(),
    "cluster": {"nasdb"},
    "predictor": {"nasdb", "cluster"},
    "search": {"nasdb", "cluster"},
}
PACKAGES = set(ALLOWED)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_cli_module(name: str) -> bool:
    """A module of the CLI face: under nasdb.cli, or a package's cli / *_cli / __main__ module."""
    last = name.rsplit(".", 1)[-1]
    return name == "nasdb.cli" or name.startswith("nasdb.cli.") or last in ("cli", "__main__") \
        or last.endswith("_cli")


def _is_main_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path, module: str | None = None) -> list[tuple[str, bool]]:
    """(imported module, inside the ``__main__`` block) for every project import of ``path``
    (those under ``if TYPE_CHECKING:`` left out: they never run).

    ``from a.b import c`` yields ``a.b.c`` when that is a module of the project, else ``a.b``;
    relative imports are resolved against ``module``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    in_main = {id(n) for block in tree.body if _is_main_block(block) for n in ast.walk(block)}
    typing_only = {id(n) for block in tree.body if _is_type_checking_block(block) for n in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and module:
                package = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(package + ([base] if base else []))
            names = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base for alias in node.names]
        else:
            continue
        if id(node) not in typing_only:  # never runs
            found += [(n, id(node) in in_main) for n in names if n.split(".")[0] in PACKAGES]
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in sorted(PACKAGES) for p in sorted((ROOT / package).rglob("*.py"))}


def private_module_of_other_package(importer: str, imported: str) -> bool:
    """True when ``imported`` names a ``_private`` module outside the importer's own package."""
    parts = imported.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            owner = ".".join(parts[:i])  # the package the private module belongs to
            return not (importer == owner or importer.startswith(owner + "."))
    return False


def violations(modules: dict[str, Path]) -> list[str]:
    """Every broken rule, one line each."""
    found = []
    for name, path in modules.items():
        top, cli = name.split(".")[0], is_cli_module(name)
        for imported, in_main in imports(path, name):
            target = imported.split(".")[0]
            face = cli or in_main
            if not (name.startswith("nasdb.cli") or target == top or target in ALLOWED[top]):
                found.append(f"{name} imports {imported}: {top}/ may import only {sorted(ALLOWED[top])}")
            if private_module_of_other_package(name, imported):
                found.append(f"{name} imports {imported}: another package's private module")
            if is_cli_module(imported) and not face:
                found.append(f"{name} imports {imported}: only the CLI imports the CLI")
    return found


def outside_modules() -> dict[str, Path]:
    """The modules outside the packages that use them: the tests and the benchmark scripts."""
    return {module_name(p): p for folder in ("tests", "benchmarks") for p in sorted((ROOT / folder).rglob("*.py"))}


def private_imports(modules: dict[str, Path]) -> list[str]:
    """Every import of a project ``_private`` module by a module outside the packages, one line each."""
    return [f"{name} imports {imported}: a private module; use its package's exports (__all__)"
            for name, path in modules.items() for imported, _ in imports(path, name)
            if private_module_of_other_package(name, imported)]


def cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Groups of modules that import each other (strongly connected), ``__main__`` blocks left out."""
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported, in_main in imports(path, name):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not in_main:
                targets.add(imported)
        graph[name] = targets
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_three_rules_hold():
    modules = project_modules()
    assert len(modules) > 50
    assert not violations(modules), "\n".join(violations(modules))


def test_no_import_cycles():
    assert not cycles(project_modules())


def test_tests_and_benchmarks_use_the_exports():
    modules = outside_modules()
    assert len(modules) > 50
    assert not private_imports(modules), "\n".join(private_imports(modules))


@pytest.mark.parametrize("source, rule", [
    ("from cluster.child._child import TrainRecipe\n", "another package's private module"),
    ("def f():\n    from cluster.child import _trainer\n", "another package's private module"),
    ("def f():\n    import search.run\n", "may import only"),
    ("from predictor.cli import fit_command\n", "only the CLI imports the CLI"),
])
def test_the_checker_fails_on_a_planted_import(tmp_path, monkeypatch, source, rule):
    planted = tmp_path / "predictor" / "planted.py"
    planted.parent.mkdir()
    planted.write_text(source)
    modules = {**project_modules(), "predictor.planted": planted}
    if "search" in source:
        modules["cluster.planted"] = modules.pop("predictor.planted")
    found = violations(modules)
    assert any(rule in line for line in found), found


def test_the_checker_allows_the_main_block_and_own_private_modules(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from predictor.fit import fit_in_process\n"
                       "if __name__ == '__main__':\n    from predictor.cli import fit_command\n")
    assert not violations({"predictor.planted": planted})
    assert not private_module_of_other_package("cluster.populate._pool", "cluster.populate._plan")
    assert private_module_of_other_package("search.run", "cluster.child._trainer")


@pytest.mark.parametrize("source", [
    "import cluster.child._batched as batched\n",
    "from nasdb import _benchmark_data\n",
    "def test_f():\n    from search._driver import SearchDriver\n",
])
def test_the_checker_fails_on_a_test_that_imports_a_private_module(tmp_path, source):
    planted = tmp_path / "tests" / "test_planted.py"
    planted.parent.mkdir()
    planted.write_text(source)
    found = private_imports({**outside_modules(), "tests.test_planted": planted})
    assert len(found) == 1 and found[0].startswith("tests.test_planted imports ") and "a private module" in found[0]
    planted.write_text("from cluster.child import train_children\nfrom child_helpers import arch\n")
    assert not private_imports({"tests.test_planted": planted})  # the exports, and the tests' own helpers
