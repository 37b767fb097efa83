"""What .ci/run relies on: the README's two set-up commands, and the names of the tests that need torchattacks."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    spec = importlib.util.spec_from_file_location("readme_commands", REPO / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.setup_commands((REPO / "README.md").read_text(encoding="utf-8"))


def test_ci_runs_the_readmes_two_commands_as_written():
    install, test = _readme_commands()
    assert install.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e ")
    assert "torchattacks" not in install  # the README's install leaves the optional torchattacks out
    assert test == "python -m pytest -q"
    run = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "readme_commands.py README.md" in run and "-k torchattacks" in run


def _needs_torchattacks(function: ast.AST) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "torchattacks" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torchattacks":
            return True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "importorskip"
            and any(isinstance(arg, ast.Constant) and arg.value == "torchattacks" for arg in node.args)
        ):
            return True  # skipped without it: .ci/run's second step must select it
    return False


def test_every_test_that_needs_torchattacks_is_named_so():
    """.ci/run's second step selects them with ``-k torchattacks``."""
    unnamed = [
        f"{path.name}::{node.name}"
        for path in sorted((REPO / "tests").glob("test_*.py"))
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef)
        and node.name.startswith("test")
        and "torchattacks" not in node.name
        and _needs_torchattacks(node)
    ]
    assert not unnamed, f"tests that need torchattacks without it in their name: {unnamed}"


def test_every_test_file_that_needs_transformers_runs_in_the_hf_step():
    """.ci/run's third step installs the [hf] extra and runs the files that skip without transformers."""
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    hf_step = script[script.index('pip install -q ".[hf]"') :].split("\n\n")[0]
    # a quoted "transformers" (importorskip, find_spec) or the shared marker; this file only names them
    uses = re.compile(r"""["']transformers["']|needs_transformers""")
    needing = [
        path.name
        for path in sorted((REPO / "tests").glob("test_*.py"))
        if path.name != "test_ci.py" and uses.search(path.read_text(encoding="utf-8"))
    ]
    missing = [name for name in needing if f"tests/{name}" not in hf_step]
    assert needing and not missing, f"test files that need transformers but .ci/run's [hf] step skips: {missing}"
