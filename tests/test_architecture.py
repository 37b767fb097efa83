"""The layering of docs/architecture.md, checked on the source: module-level imports only go down."""

from __future__ import annotations

import ast
import subprocess
import sys
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
    "training": 2,
    "corruptions": 2,
    "defenses": 3,
    "art": 3,
    "benchmark": 4,
    "cli": 5,
    "__main__": 6,
    "": 6,
}
BOTTOM_IMPORTS = {"losses": {"validation"}}


def _module_level_imports(path: Path) -> set[str]:
    """Top-level parts of segrobust that ``path`` imports at module level (not inside functions)."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(module[: len(module) - node.level + (path.name == "__init__.py")])
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            targets = [f"{name}.{alias.name}" for alias in node.names] if name == "segrobust" else [name]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found.update(t.split(".")[1] if "." in t else "" for t in targets if t.startswith("segrobust"))
    return found


def _part(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if parts[0] != "__init__" else ""


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_level_imports_go_down(path: Path) -> None:
    part = _part(path)
    assert part in LAYERS, f"{part!r} is not placed in a layer: add it to docs/architecture.md and LAYERS"
    for target in _module_level_imports(path) - {part}:
        assert target in LAYERS, f"{path} imports unknown part segrobust.{target}"
        if LAYERS[part] == LAYERS[target] == 0:
            assert target in BOTTOM_IMPORTS.get(part, set()), f"{path}: bottom module imports segrobust.{target}"
        else:
            assert LAYERS[target] < LAYERS[part], (
                f"{path} (layer {LAYERS[part]}) imports segrobust.{target} (layer {LAYERS[target]}) at module level"
            )


def test_no_module_imports_another_modules_private_name() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segrobust"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                own_package = node.module.rsplit(".", 1)[-1].startswith("_")  # a package's own private module
                if private and not own_package:
                    offenders.append(f"{path.relative_to(PACKAGE)}: from {node.module} import {', '.join(private)}")
    assert not offenders, "\n".join(offenders)


def test_import_training_does_not_import_the_attacks() -> None:
    code = "import segrobust.training, sys; assert 'segrobust.attacks' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
