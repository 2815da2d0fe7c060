"""Every package the code imports is declared in pyproject.toml (not merely brought by another)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in extras for r in project["optional-dependencies"][extra])]
    return {_canonical(re.split(r"[^A-Za-z0-9_.-]", r, maxsplit=1)[0]) for r in requirements}


def _imported(directory: Path) -> set[str]:
    """Top-level modules imported by the Python files under ``directory``, other than the
    standard library, this package and the directory's own modules."""
    local = {path.stem for path in directory.rglob("*.py")} | {"mcp_backgroundr", "tests", "bench"}
    found: set[str] = set()
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - local - set(sys.stdlib_module_names)


@pytest.mark.parametrize(
    ("directory", "extras"), [("src", ()), ("tests", ("test",)), ("bench", ("test",))], ids=["src", "tests", "bench"]
)
def test_every_imported_package_is_declared(directory: str, extras: tuple[str, ...]) -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = _declared(*extras)
    missing = {
        f"{module} (from {', '.join(distributions.get(module, ['?']))})"
        for module in _imported(ROOT / directory)
        if not {_canonical(d) for d in distributions.get(module, [module])} & declared
    }
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
