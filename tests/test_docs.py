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
    "segrobust.models.inference",
    "segrobust.models.huggingface",
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
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
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


SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|obj|data|exc|const):`")


def test_docs_pages_write_no_sphinx_roles():
    """mkdocs shows a Sphinx role as raw text; pages use markdown cross-references."""
    raw = [
        f"{page.relative_to(REPO)}:{number}"
        for page in DOCS.rglob("*.md")
        for number, line in enumerate(page.read_text().splitlines(), 1)
        if SPHINX_ROLE.search(line)
    ]
    assert raw == []


def test_docs_cite_no_internal_design_file():
    """Users never see the design notes; the definitions live on docs/algorithms.md."""
    cited = [str(page.relative_to(REPO)) for page in DOCS.rglob("*.md") if "ALGORITHMS.md" in page.read_text()]
    assert cited == []


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="the docs toolchain (pip install -e .[docs]) is not installed")
    pytest.importorskip("mkdocstrings", reason="the docs toolchain (pip install -e .[docs]) is not installed")
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return site, proc


def test_site_builds_in_strict_mode(built_site):
    site, proc = built_site
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (site / "algorithms" / "index.html").exists()


def test_math_is_rendered_by_mathjax_served_from_the_site_itself(built_site):
    """Offline, formulas must still render: no script or stylesheet comes from another host."""
    site, proc = built_site
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (site / "algorithms" / "index.html").read_text()
    assert page.count('class="arithmatex"') > 50
    assert 'src="../assets/mathjax/tex-chtml.js"' in page and 'src="../javascripts/mathjax.js"' in page
    for html in site.rglob("*.html"):
        remote = re.findall(r'<(?:script[^>]*src|link[^>]*href)="(https?://[^"]+)"', html.read_text())
        assert remote == [], (html.relative_to(site), remote)
    fonts = list((site / "assets" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert (site / "assets" / "mathjax" / "tex-chtml.js").stat().st_size > 500_000 and len(fonts) > 20


def test_the_index_names_the_reliable_evaluation():
    index = (DOCS / "index.md").read_text()
    assert "reliable evaluation" in index.lower() and "(attacks/apgd.md)" in index


def test_table_names_never_break_mid_word(built_site):
    """The APGD loss table (and every other) keeps first-column names such as balanced_masked_ce whole."""
    site, proc = built_site
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (site / "attacks" / "apgd" / "index.html").read_text()
    assert 'href="../../stylesheets/extra.css"' in page and '<code>"balanced_masked_ce"</code>' in page
    css = (site / "stylesheets" / "extra.css").read_text()
    assert re.search(r"td:first-child code \{[^}]*white-space: nowrap", css)


def test_every_cross_reference_resolves(built_site):
    """An unresolved [name][segrobust.x] is left in the page as text; none may remain."""
    site, proc = built_site
    assert proc.returncode == 0, proc.stderr[-3000:]
    unresolved = {
        str(page.relative_to(site)): found
        for page in site.rglob("*.html")
        if (found := re.findall(r"\]\[segrobust\.[\w.]+\]", page.read_text()))
    }
    assert unresolved == {}


def test_built_site_shows_no_raw_sphinx_roles(built_site):
    """Every rendered page, API entries included: docstrings use markdown cross-references."""
    site, proc = built_site
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = [
        str(page.relative_to(site))
        for page in site.rglob("*.html")
        if re.search(r":(?:class|meth|func|attr|mod|obj|data|exc):", page.read_text())
    ]
    assert raw == []
