"""The layering of docs/architecture.md, checked on the source: every import statement, inside functions too.

An import inside a function is still a dependency (it only runs later), so the
parts of segrobust form layers counting every import; a module never imports
another part's private (``_name``) module or name, and no modules import each
other in a circle, at any depth.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segrobust"

#: Layer of each top-level part of the package (docs/architecture.md); a part may import
#: parts of a lower layer, and within layer 0 only as listed in ``BOTTOM_IMPORTS``.
LAYERS = {
    "validation": 0,
    "utils": 0,
    "fileio": 0,
    "distributed": 0,
    "losses": 0,
    "metrics": 1,
    "rain": 1,
    "datasets": 1,
    "models": 1,
    "attacks": 2,
    "corruptions": 2,
    "training": 3,
    "defenses": 4,
    "art": 4,
    "benchmark": 5,
    "cli": 6,
    "__main__": 7,
    "": 0,  # segrobust/__init__.py: the version only
}
BOTTOM_IMPORTS = {"losses": {"validation"}, "fileio": {"utils"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Ids of import nodes under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


@cache
def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` of every import statement in ``path`` that names segrobust, at any depth."""
    own = _module_name(path)
    return imports_in(path.read_text(encoding="utf-8"), own if _is_package(path) else own.rpartition(".")[0])


def imports_in(source: str, package: str) -> list[tuple[str, list[str], int]]:
    """The segrobust imports of ``source``, a module of ``package`` (for relative imports)."""
    tree = ast.parse(source)
    skipped = _type_checking_only(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "segrobust":
                found.append((name, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.split(".")[0] == "segrobust"]
    return found


def _targets(module: str, names: list[str]) -> list[str]:
    """The modules an import loads: ``from pkg import sub`` names the submodule ``pkg.sub`` when there is one."""
    modules = _modules()
    submodules = [f"{module}.{name}" for name in names if f"{module}.{name}" in modules]
    rest = [name for name in names if f"{module}.{name}" not in modules]
    return submodules + ([module] if rest or not names else [])


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_import_goes_down_the_layers(path: Path) -> None:
    part = _part(_module_name(path))
    assert part in LAYERS, f"{part!r} is not placed in a layer: add it to docs/architecture.md and LAYERS"
    for module, names, line in imports_of(path):
        for target in {_part(t) for t in _targets(module, names)} - {part}:
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports segrobust.{target}"
            assert target in LAYERS, f"{where}, an unknown part"
            if LAYERS[part] == LAYERS[target] == 0:
                assert target in BOTTOM_IMPORTS.get(part, set()), f"{where}: bottom modules import only torch"
            else:
                assert LAYERS[target] < LAYERS[part], f"{where} (layer {LAYERS[target]}, not below {LAYERS[part]})"


def _private(text: str) -> bool:
    return text.startswith("_") and not text.startswith("__")


def test_no_module_imports_another_parts_private_module_or_name() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(_module_name(path))
        for module, names, line in imports_of(path):
            if _part(module) == part:
                continue
            hidden = [p for p in module.split(".") if _private(p)] + [n for n in names if _private(n)]
            if hidden:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} {', '.join(hidden)}")
    assert not offenders, "private imports across parts:\n" + "\n".join(offenders)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in _modules().items():
        edges = graph.setdefault(name, set())
        for module, names, _line in imports_of(path):
            edges.update(t for t in _targets(module, names) if t != name and t in _modules())
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of ``graph`` (empty when there is none), by depth-first search."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_circles_between_modules() -> None:
    """Counting function-level imports; a package's ``__init__`` re-exporting its modules is an edge too."""
    cycle = _cycle(_graph())
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_the_checks_read_imports_inside_functions_but_not_annotation_only_ones() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from segrobust.benchmark import BenchmarkResults\n"
        "def f():\n    from ..defenses._private import thing\n"
        "class A:\n    def g(self):\n        import segrobust.cli\n"
    )
    assert imports_in(source, "segrobust.training") == [
        ("segrobust.defenses._private", ["thing"], 5),
        ("segrobust.cli", [], 8),
    ]


def test_import_training_does_not_import_the_attacks() -> None:
    code = "import segrobust.training, sys; assert 'segrobust.attacks' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
