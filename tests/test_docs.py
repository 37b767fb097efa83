"""The docs stay true: quick-start code runs as written, and every public name has an API entry."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PACKAGES = [
    "segrobust.attacks",
    "segrobust.art",
    "segrobust.benchmark",
    "segrobust.datasets",
    "segrobust.defenses",
    "segrobust.metrics",
    "segrobust.rain",
    "segrobust.training",
    "segrobust.utils",
    "segrobust.validation",
    "segrobust.models",
]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("page", ["docs/quickstart.md", "README.md"])
def test_quick_start_code_runs_as_written(page, tmp_path):
    code = "\n".join(_python_blocks(REPO / page))
    assert code.strip(), f"no python code block in {page}"
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _directives() -> list[str]:
    found = []
    for page in DOCS.rglob("*.md"):
        found += re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.M)
    return found


def _documented() -> tuple[set[int], set[str]]:
    objects, names = set(), set()
    for path in _directives():
        names.add(path)
        module_name, _, attr = path.rpartition(".")
        try:
            target = importlib.import_module(path)
        except ImportError:
            target = getattr(importlib.import_module(module_name), attr)
        objects.add(id(target))
        if inspect.ismodule(target):
            public = getattr(target, "__all__", [n for n in vars(target) if not n.startswith("_")])
            for name in public:
                objects.add(id(getattr(target, name)))
                names.add(f"{path}.{name}")
    return objects, names


def test_every_public_name_appears_in_the_api_pages():
    objects, names = _documented()
    missing = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if not (id(value) in objects or f"{package}.{name}" in names):
                missing.append(f"{package}.{name}")
    assert not missing, f"public names without an API entry in docs/: {missing}"


def test_every_docs_page_is_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    assert [p for p in pages if p not in nav] == []
