"""MkDocs hook: serve MathJax from the site itself, so formulas render offline.

The files come from the ``django-static-mathjax`` package (a pure-data wheel of
MathJax's official es5 build, a dependency of the ``docs`` extra): the combined
``tex-chtml.js`` component, the TeX extensions it loads on demand, its CHTML
fonts and the menu and accessibility components, copied under
``assets/mathjax/`` with their layout kept (MathJax finds its fonts and
extensions relative to its own URL). No CDN is contacted when a page is viewed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

#: Where the files land in the site (``extra_javascript`` names ``assets/mathjax/tex-chtml.js``).
DEST = "assets/mathjax"
#: What the site needs from MathJax's es5 folder (about 3 MB; the speech-rule maps and other bundles are left out).
WANTED = ("tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "ui", "a11y")


def mathjax_es5() -> Path:
    """MathJax's es5 folder inside the installed ``django-static-mathjax`` package."""
    spec = importlib.util.find_spec("mathjax")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    root = Path(locations[0]) / "static" / "mathjax" / "es5" if locations else None
    if root is None or not (root / "tex-chtml.js").is_file():
        raise PluginError(
            "MathJax files not found: install the docs extra (pip install -e '.[docs]'), which brings "
            "django-static-mathjax, the package that ships them"
        )
    return root


def mathjax_files(root: Path) -> list[Path]:
    """The files of `WANTED` under ``root``, sorted."""
    found = []
    for wanted in WANTED:
        path = root / wanted
        found += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return found


def on_files(files: Files, config) -> Files:
    root = mathjax_es5()
    for source in mathjax_files(root):
        uri = f"{DEST}/{source.relative_to(root).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files
