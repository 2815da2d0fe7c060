"""The code stays ruff-clean, formatted, type-checked with mypy --strict, and layered (import-linter)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = "import sys, importlinter.cli as c; sys.exit(c.lint_imports(no_cache=True, no_logo=True))"
"""The contracts of ``[tool.importlinter]`` in pyproject.toml: imports only go down the layers."""


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "ruff", "check", "."],
        ["-m", "ruff", "format", "--check", "."],
        ["-m", "mypy"],
        ["-c", LINT_IMPORTS],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict", "import-layers"],
)
def test_tool_passes(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 250
KNOWN_BIG_UNITS: set[str] = set()
"""Named debt: units over the limits, each to be split. This set may only shrink: a unit cannot
join it, and one that is small again must leave it."""


def _big_units() -> set[str]:
    """Every function over MAX_FUNCTION_LINES and class over MAX_CLASS_LINES in src/."""
    package = ROOT / "src" / "mcp_backgroundr"
    found: set[str] = set()

    def visit(node: ast.AST, where: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, where, prefix)
                continue
            name = prefix + child.name
            limit = MAX_CLASS_LINES if isinstance(child, ast.ClassDef) else MAX_FUNCTION_LINES
            if (child.end_lineno or child.lineno) - child.lineno + 1 > limit:
                found.add(f"{where}:{name}")
            visit(child, where, name + ".")

    for path in sorted(package.rglob("*.py")):
        visit(ast.parse(path.read_text(encoding="utf-8")), path.relative_to(package).as_posix(), "")
    return found


def test_units_are_small() -> None:
    big = _big_units()
    assert big - KNOWN_BIG_UNITS == set(), (
        f"over {MAX_FUNCTION_LINES} lines a function or {MAX_CLASS_LINES} a class: split it"
    )
    assert KNOWN_BIG_UNITS - big == set(), "small now: take it off KNOWN_BIG_UNITS"


def test_every_module_is_in_a_layer() -> None:
    # A module left out of the layers contract is checked by none of it: name each one there.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers")
    layered = {name.strip() for layer in contract["layers"] for name in layer.replace(":", "|").split("|")}
    package = ROOT / "src" / "mcp_backgroundr"
    modules = {p.stem for p in package.glob("*.py")} | {p.parent.name for p in package.glob("*/__init__.py")}
    assert {f"mcp_backgroundr.{m}" for m in modules - {"__init__", "__main__"}} - layered == set()


def test_layers_have_no_exceptions() -> None:
    # remote/ implements the core's Place seam and sits above the core: no import goes around the layers.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers")
    assert contract.get("ignore_imports", []) == []


PLACE_CHOICE = {"state.py:CoreState.place_at"}
"""Where the core may ask whether a task has a host: the one choice of its place."""


def _is_host(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "host") or (
        isinstance(node, ast.Name) and node.id == "host"
    )


def _asks_for_a_host(node: ast.AST) -> bool:
    """Whether a condition asks if something has a host (``x.host is None``, ``if x.host``, ``not x.host``)."""
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        none = any(isinstance(o, ast.Constant) and o.value is None for o in operands)
        return none and any(_is_host(o) for o in operands)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _asks_for_a_host(node.operand)
    if isinstance(node, ast.BoolOp):
        return any(_asks_for_a_host(v) for v in node.values)
    return _is_host(node)


def _host_tests(tree: ast.AST, where: str) -> set[str]:
    """The functions of a module whose conditions (if, while, comparisons, comprehension
    filters) ask whether something has a host."""
    found: set[str] = set()

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = name
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{name}.{child.name}" if name else child.name
            tests: list[ast.AST] = []
            if isinstance(child, ast.If | ast.IfExp | ast.While):
                tests = [child.test]
            elif isinstance(child, ast.Compare | ast.BoolOp):
                tests = [child]
            elif isinstance(child, ast.comprehension):
                tests = list(child.ifs)
            if any(_asks_for_a_host(t) for t in tests):
                found.add(f"{where}:{inner}")
            visit(child, inner)

    visit(tree, "")
    return found


def test_core_chooses_a_place_once() -> None:
    # Where a task runs is one seam (core/place.py): the core's units call the task's place, and
    # only CoreState.place_at looks at a host to choose it.
    core = ROOT / "src" / "mcp_backgroundr" / "core"
    found: set[str] = set()
    for path in sorted(core.glob("*.py")):
        found |= _host_tests(ast.parse(path.read_text(encoding="utf-8")), path.name)
    assert found == PLACE_CHOICE
