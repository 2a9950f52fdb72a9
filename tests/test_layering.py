"""Imports run one way, down the flow: nasdb -> cluster -> predictor / search (README, Layout)."""

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


def _is_cli(path: Path) -> bool:
    """Only the CLI sees every wing: the nasdb/cli/ package."""
    return path.relative_to(ROOT).parts[:2] == ("nasdb", "cli")


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found |= {n.split(".")[0] for n in names} & PACKAGES
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_down_the_flow(package):
    files = [p for p in (ROOT / package).rglob("*.py") if not _is_cli(p)]
    assert files, f"no modules found under {package}/"
    offending = {
        str(p.relative_to(ROOT)): sorted(bad)
        for p in files
        if (bad := _imported_packages(p) - ALLOWED[package] - {package})
    }
    assert not offending, f"{package}/ may import only {sorted(ALLOWED[package])}: {offending}"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "mod.py"
    bad.write_text("import numpy\nfrom predictor.model import PerformancePredictor\nimport search.run as r\n")
    assert _imported_packages(bad) == {"predictor", "search"}
